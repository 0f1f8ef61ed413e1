#!/usr/bin/env bash
# Create .venv (Python 3.11+), install streamrec, and run the demo on the shipped MovieLens data.
# Without REDIS_URL the demo runs in one process on an in-process fakeredis.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/streamrec demo "$@"
