#!/usr/bin/env bash
# Create .venv with Python 3.11+ if missing, and install streamrec into it. Sourced by the other
# scripts from the repository root; $1 is the pip extras, for example "[test]".
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".${1:-}"
