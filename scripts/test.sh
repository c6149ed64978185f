#!/usr/bin/env bash
# Set up (if needed) and run the default test suite: CPU only, real-model tests (-m slow) and GPU
# tests (-m gpu) deselected. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "no tests were collected" >&2
fi
exit "$rc"
