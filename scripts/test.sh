#!/usr/bin/env bash
# Set up, then run everything CI checks: ruff, mypy, the import-time check, and pytest
# (unit tests, property tests, doctests, the docs' code and the main example).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== import fpipe (fast, without tensorflow)"
.venv/bin/python -m compileall -q fpipe  # as an installed package would be: bytecode ready
for _ in 1 2 3; do
  .venv/bin/python - <<'PY'
import sys, time
t = time.perf_counter()
import fpipe  # noqa: F401
took = time.perf_counter() - t
print(f"import fpipe: {took:.3f} s, tensorflow imported: {'tensorflow' in sys.modules}")
assert "tensorflow" not in sys.modules, "import fpipe must not import tensorflow"
assert took < 1.0, f"import fpipe took {took:.2f} s; keep heavy imports lazy"
PY
done
echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
