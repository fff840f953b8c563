#!/usr/bin/env bash
# Start the validator process with settings from .env.validator (see .env.validator.example).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
exec "$PYTHON" -m validator "$@"
