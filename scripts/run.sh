#!/usr/bin/env bash
# Sets everything up and runs the syncwatch API on http://127.0.0.1:8080 with its data in ./data
# (SQLite). On the first run it creates an admin key and an ingest key and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SYNCWATCH_DATA_DIR=${SYNCWATCH_DATA_DIR:-$PWD/data}
.venv/bin/syncwatch db upgrade
if [ ! -f "$SYNCWATCH_DATA_DIR/.keys-made" ]; then
  admin=$(.venv/bin/syncwatch keys create --role admin --name admin)
  ingest=$(.venv/bin/syncwatch keys create --role ingest --name ingest)
  touch "$SYNCWATCH_DATA_DIR/.keys-made"
  echo
  echo "  admin key:  $admin"
  echo "  ingest key: $ingest"
  echo "  (shown once; only their hashes are stored. More: .venv/bin/syncwatch keys create --role ROLE)"
  echo
fi
exec .venv/bin/syncwatch serve "$@"
