#!/usr/bin/env bash
# Runs every check: ruff (lint and format), mypy (strict on the packages), import-linter (the layer
# contract), and the whole test suite in parallel on SQLite and PostgreSQL.
# Extra arguments go to pytest, e.g. scripts/check.sh -k ingest
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import-linter"; lint-imports
echo "== pytest"; pytest -n "${PYTEST_WORKERS:-auto}" -q "$@"
