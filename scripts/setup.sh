#!/usr/bin/env bash
# Create .venv (if needed) and install fpipe with everything it is developed with.
# Sourced by scripts/example.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
export TF_CPP_MIN_LOG_LEVEL=2
