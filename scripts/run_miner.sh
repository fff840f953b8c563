#!/usr/bin/env bash
# Run one reference miner (configured by .env.miner or MINER_ENV_FILE; see .env.miner.example).
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m miner "$@"
