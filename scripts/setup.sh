#!/usr/bin/env bash
# Create .venv (if needed) and install fpipe with everything it is developed with.
# Sourced by scripts/example.sh, scripts/test.sh and scripts/docs.sh. The install is
# skipped, silently, when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
stamp=".venv/.fpipe-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with ${PYTHON:-python3} ($("${PYTHON:-python3}" --version 2>&1))"
    "${PYTHON:-python3}" -m venv .venv
  fi
  echo "== installing fpipe (the distribution fpipe-ml) into .venv, editable, with its extras:"
  echo "   tf (tensorflow-cpu), dask, plot, docs and test (pytest, hypothesis, ruff, mypy...)."
  if [ -f "$stamp" ]; then
    echo "   pyproject.toml has changed since the last install: fetching what is new."
  else
    echo "   The first install downloads several hundred MB (TensorFlow is most of it), fills"
    echo "   about 2 GB and takes a few minutes; later runs skip it until pyproject.toml changes."
  fi
  .venv/bin/python -m pip install -qq --upgrade pip
  if [ -t 1 ]; then
    # a terminal: pip's own output, download progress bars included
    .venv/bin/python -m pip install -e ".[dev]"
  else
    # a log (CI): one line per package collected and downloaded, then the summary;
    # pip's errors and warnings go to stderr, unfiltered
    .venv/bin/python -m pip install --progress-bar off -e ".[dev]" | while IFS= read -r line; do
      case "$line" in
        *Downloading*.metadata*) ;; # pip fetches a wheel's metadata first: not a download to wait on
        Collecting* | *Downloading* | "Installing collected"* | "Successfully installed"*)
          [ "${#line}" -le 110 ] || line="${line:0:106} ..."
          echo "   $line"
          ;;
      esac
    done
  fi
  echo "$want" > "$stamp"
  echo "== installed; scripts/setup.sh skips this step from now on"
fi
export TF_CPP_MIN_LOG_LEVEL=2
