#!/usr/bin/env bash
# Set up (first run) and start the whole local subnet: miners, validator, two API workers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/gateway-localnet "$@"
