#!/usr/bin/env bash
# Create .venv (Python 3.11+), install streamrec with its test dependencies, and run the tests.
# Tests that need Redis use STREAMREC_TEST_REDIS_URL and flush that database before and after
# each test. When it is unset and redis-server is installed, this script starts a throwaway
# redis-server on a free port, so the tests never flush a database of a server someone else
# runs. The server and its files in $TMPDIR (default /tmp) are removed when the script exits,
# also on failure or Ctrl-C. Without redis-server the tests fall back to redis://127.0.0.1:6379/15.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "[test]"

if [ -z "${STREAMREC_TEST_REDIS_URL:-}" ]; then
  if command -v redis-server >/dev/null; then
    redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/streamrec-test-redis.XXXXXX")
    redis_pid=""
    # The server runs as this script's child, not daemonized, so the trap has its pid at once
    # and can wait for it to stop before removing its directory.
    stop_test_redis() {
      if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null || true  # it may have stopped already, on Ctrl-C for one
        wait "$redis_pid" 2>/dev/null || true
      fi
      rm -rf "$redis_dir"
    }
    trap stop_test_redis EXIT
    port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$redis_dir" \
      >"$redis_dir/redis.log" 2>&1 &
    redis_pid=$!
    # Another process may have taken the port since it was chosen, so the server that replies
    # must report this child's process id.
    if ! .venv/bin/python - "$port" "$redis_pid" <<'PY'
import sys, time, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
port, pid = int(sys.argv[1]), int(sys.argv[2])
# No retries inside redis-py: its default backoff would stretch each failed try to seconds.
client = redis.Redis(port=port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        sys.exit(0 if client.info("server")["process_id"] == pid else 1)
    except redis.ConnectionError:
        time.sleep(0.1)
sys.exit(1)
PY
    then
      echo "error: the tests' redis-server did not respond on 127.0.0.1:$port within 5 seconds; its output:" >&2
      cat "$redis_dir/redis.log" >&2
      exit 1
    fi
    export STREAMREC_TEST_REDIS_URL="redis://127.0.0.1:$port/15"
    echo "started redis-server on 127.0.0.1:$port for the tests"
  else
    echo "warning: redis-server is not installed, so the tests use and flush redis://127.0.0.1:6379/15" >&2
  fi
fi
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
