#!/usr/bin/env bash
# Set up the environment, lint, build the docs site, then run the test suite. Extra args go
# to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
echo "[test] ruff check ."
.venv/bin/ruff check .
echo "[test] mkdocs build --strict"
# The docs site (mkdocs.yml): a broken link, anchor or a page left out of the nav fails.
# Its log is shown only then (--quiet would also hide the warnings strict mode counts);
# NO_MKDOCS_2_WARNING silences the theme's banner about its successor.
SITE_DIR="$(mktemp -d)"
if ! NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$SITE_DIR/site" \
    >"$SITE_DIR/build.log" 2>&1; then
    cat "$SITE_DIR/build.log"
    rm -rf "$SITE_DIR"
    exit 1
fi
rm -rf "$SITE_DIR"
echo "[test] pytest $*"
.venv/bin/python -m pytest "$@"
