#!/usr/bin/env bash
# Set up, then train and evaluate the main example (examples/digits.py).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
.venv/bin/python examples/digits.py "$@"
