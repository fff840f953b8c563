#!/usr/bin/env bash
# Create .venv and install the project with its test extras; skipped when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: PYTHON_BIN when given; else the distribution's own Python 3 when it is 3.11 or newer and can
# make a venv, else python3 on PATH. Debian builds its Python with profile-guided optimisation and LTO, as
# the Docker images do; pyenv's default build has neither. On one machine Debian's served this
# stack's requests with 13-35% less CPU than pyenv's (docs/performance.md, round 15).
pick_python() {
  local candidate
  for candidate in /usr/bin/python3 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo python3
}
if [ ! -x .venv/bin/python ]; then
  "${PYTHON_BIN:-$(pick_python)}" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
