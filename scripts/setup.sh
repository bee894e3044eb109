#!/usr/bin/env bash
# Create .venv (if needed) and install fpipe with everything it is developed with.
# Sourced by scripts/example.sh and scripts/test.sh. The install is skipped when
# pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=".venv/.fpipe-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing fpipe-ml[dev] into .venv"
  .venv/bin/python -m pip install -qq --upgrade pip
  .venv/bin/python -m pip install -qq -e ".[dev]"
  echo "$want" > "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL=2
