#!/usr/bin/env bash
# Sets up everything syncwatch and its tests need on a fresh machine of this kind (Debian, Python
# 3.11+, root): the Debian packages, a virtualenv in .venv with the project and its dev tools, and
# the local PostgreSQL server running. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# prometheus (with promtool) and prometheus-alertmanager (with amtool): the tests run them for real
# chromium and chromium-driver: the dashboard's end-to-end test; poppler-utils (pdftotext, pdftoppm):
# the report tests read the PDF back; fonts-dejavu-core: fonts for WeasyPrint's PDFs
DEBIAN_PACKAGES=(postgresql prometheus prometheus-alertmanager chromium chromium-driver poppler-utils
  fonts-dejavu-core)

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Debian's docker-compose (1.29): tests/integration/test_compose.py validates docker-compose.yml with
# `docker-compose config`, which needs no engine. Without its recommended docker.io: no Docker
# engine is installed (nor started) here.
if ! dpkg-query -W -f='${Status}' docker-compose 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: installing docker-compose"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import syncwatch, core, collector" # fails loudly if the install did not work

# Debian's packages start Prometheus and Alertmanager as services on their default ports; the tests
# start their own on free ports, so stop the packaged ones where they were started.
for service in prometheus prometheus-alertmanager prometheus-node-exporter; do
  pkill -x "${service}" 2>/dev/null || true
done

# The tests use the PostgreSQL server on 127.0.0.1:5432 (trust auth, database test).
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi

# The replay tests publish to the local RabbitMQ (127.0.0.1:5672, guest/guest), as a middleware's
# broker would be. Start it when it is installed but not running.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  if command -v rabbitmq-server >/dev/null; then
    echo "setup: starting RabbitMQ"
    rabbitmq-server -detached
  else
    echo "setup: installing RabbitMQ"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
    rabbitmq-server -detached || true
  fi
  for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
fi

# The broker consumer tests use NATS with JetStream at 127.0.0.1:4222. Start it when it is installed
# but not running (Debian's nats-server), else install it.
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  if ! command -v nats-server >/dev/null; then
    echo "setup: installing NATS"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
  fi
  echo "setup: starting NATS with JetStream"
  mkdir -p /var/lib/nats-server
  nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/tmp/nats-server.log 2>&1 &
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 1; done
fi
