#!/usr/bin/env bash
# Create .venv (Python 3.11+), install streamrec with its test dependencies, and run the tests.
# Tests that need Redis use STREAMREC_TEST_REDIS_URL (default redis://127.0.0.1:6379/15) and flush
# that database. When no server responds there, this script starts a throwaway redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "[test]"

if ! .venv/bin/python -c "import os, redis; redis.Redis.from_url(os.environ.get('STREAMREC_TEST_REDIS_URL', 'redis://127.0.0.1:6379/15'), socket_connect_timeout=1).ping()" 2>/dev/null; then
  if command -v redis-server >/dev/null; then
    port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "/tmp/streamrec-test-redis-$port.pid" --logfile "/tmp/streamrec-test-redis-$port.log"
    trap 'kill "$(cat /tmp/streamrec-test-redis-'"$port"'.pid)" 2>/dev/null || true' EXIT
    export STREAMREC_TEST_REDIS_URL="redis://127.0.0.1:$port/15"
    echo "started redis-server on 127.0.0.1:$port for the tests"
  else
    echo "warning: no Redis reachable and no redis-server installed; Redis tests will be skipped" >&2
  fi
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
