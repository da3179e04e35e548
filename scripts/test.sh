#!/usr/bin/env bash
# Sets everything up, then runs every check and the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/check.sh "$@"
