#!/usr/bin/env bash
# Create .venv (Python 3.11+), install streamrec with its test dependencies, and run the tests.
# Tests that need Redis use STREAMREC_TEST_REDIS_URL and flush that database before and after
# each test. When it is unset and redis-server is installed, this script starts a throwaway
# redis-server on a free port, so the tests never flush a database of a server someone else
# runs. Without redis-server the tests fall back to redis://127.0.0.1:6379/15.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "[test]"

if [ -z "${STREAMREC_TEST_REDIS_URL:-}" ]; then
  if command -v redis-server >/dev/null; then
    port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "/tmp/streamrec-test-redis-$port.pid" --logfile "/tmp/streamrec-test-redis-$port.log"
    trap 'kill "$(cat /tmp/streamrec-test-redis-'"$port"'.pid)" 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    export STREAMREC_TEST_REDIS_URL="redis://127.0.0.1:$port/15"
    echo "started redis-server on 127.0.0.1:$port for the tests"
  else
    echo "warning: redis-server is not installed, so the tests use and flush redis://127.0.0.1:6379/15" >&2
  fi
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
