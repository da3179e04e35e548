#!/usr/bin/env bash
# Sets everything up and runs the one-command demo, `syncwatch demo`: the API with its scheduler on
# http://127.0.0.1:8080, the dashboard on http://127.0.0.1:8501, a simulated firm's CLM, middleware
# and ERP traffic (eight weeks of history, then live), and Prometheus and Alertmanager (Debian's
# packages, installed by setup.sh); data in ./data (SQLite). It prints the URLs and a key per role
# (kept in ./data/demo/keys.json); Ctrl-C stops everything. Arguments go to `syncwatch demo`
# (--port P, --dashboard-port Q). docs/getting-started.md.
#
# To run only the API on your own data instead (no simulator), as this script did before the demo:
#   export SYNCWATCH_DATA_DIR=$PWD/data
#   .venv/bin/syncwatch keys create --role admin --name admin     # prints the key; hash stored
#   .venv/bin/syncwatch keys create --role ingest --name ingest
#   .venv/bin/syncwatch serve
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SYNCWATCH_DATA_DIR=${SYNCWATCH_DATA_DIR:-$PWD/data}
exec .venv/bin/syncwatch demo "$@"
