#!/usr/bin/env bash
# Create .venv (Python 3.11+), install streamrec, and run the demo on the shipped MovieLens data.
# Without REDIS_URL the demo runs in one process on an in-process fakeredis.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh ""
exec .venv/bin/streamrec demo "$@"
