#!/usr/bin/env bash
# Start the api process with settings from .env.api (see .env.api.example).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" -m api "$@"
