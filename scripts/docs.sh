#!/usr/bin/env bash
# Set up, then build the documentation site (mkdocs.yml: docs/ and the API reference
# generated from the docstrings) into site/, with --strict: a broken link, a page missing
# from the nav or a docstring mkdocstrings cannot read fails the build. It needs no
# network. Arguments go to `mkdocs build`, e.g. `bash scripts/docs.sh --site-dir /tmp/site`;
# `.venv/bin/mkdocs serve` previews the site while you edit.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
echo "== docs: mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir site "$@"
