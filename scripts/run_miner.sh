#!/usr/bin/env bash
# Run one reference miner (configured by .env.miner or MINER_ENV_FILE; see .env.miner.example).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" -m miner "$@"
