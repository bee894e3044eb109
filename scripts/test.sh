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
# the best of three fresh interpreters must stay under 0.25 s (README says about 0.1 s)
best=""
for _ in 1 2 3; do
  took="$(.venv/bin/python - <<'PY'
import sys, time
t = time.perf_counter()
import fpipe  # noqa: F401
took = time.perf_counter() - t
heavy = sorted({"tensorflow", "keras", "tqdm", "matplotlib", "pandas"} & set(sys.modules))
assert not heavy, f"import fpipe must not import {heavy}: keep heavy imports lazy"
print(f"{took:.3f}")
PY
)"
  echo "import fpipe: ${took} s"
  best="$(printf '%s\n' "$took" $best | sort -n | head -1)"
done
.venv/bin/python -c "import sys; b = float(sys.argv[1]); assert b < 0.25, f'import fpipe took {b:.2f} s at best; keep heavy imports lazy'" "$best"
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
