#!/usr/bin/env bash
# Set up, then run everything CI checks: ruff, mypy, the docs site build (strict), the
# import-time check, and pytest (unit tests, property tests, doctests, the docs' code and
# the main example). Arguments go to pytest, e.g. `bash scripts/test.sh -x -k rebatch`.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
bash scripts/docs.sh  # the docs site and API reference, mkdocs build --strict
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
# pytest in two passes: first everything not marked slow (hypothesis profile "fpipe"), then
# the tests marked slow under the hypothesis profile "slow", which gives the big properties
# (lose-nothing, resume-anywhere) their full budgets (see conftest.py). Both passes always
# run and both get this script's arguments; a pass they leave without a test is no failure.
echo "== pytest"
quick=0
.venv/bin/python -m pytest -p no:cacheprovider -m "not slow" "$@" || quick=$?
echo "== pytest: the tests marked slow, hypothesis profile \"slow\""
slow=0
.venv/bin/python -m pytest -p no:cacheprovider -m slow --hypothesis-profile=slow "$@" || slow=$?
for rc in "$quick" "$slow"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi  # 5: no test was selected
done
if [ "$quick" -eq 5 ] && [ "$slow" -eq 5 ]; then
  echo "no test was selected" >&2
  exit 5
fi
