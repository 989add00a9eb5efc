#!/usr/bin/env bash
# Set up a development environment: Python 3.11 venv in .venv with the dev extras.
# The same steps `make test` runs; use this when you want the environment without
# running anything.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "setup: $PYTHON is not Python 3.11" >&2
    exit 1
}
make PYTHON="$PYTHON" install-dev
echo "setup: ready. 'make run' serves the model, 'make test' runs the suite."
