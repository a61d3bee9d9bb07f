#!/usr/bin/env bash
# Installs grove with its test tools and resources (scripts/install.sh test), then runs the whole
# test suite. Extra arguments go to pytest. "No tests collected" is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test || exit 1
bash scripts/place-offline-data.sh || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
fi
exit "$status"
