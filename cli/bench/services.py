"""Processes the bench starts and stops itself: a private redis-server and streamrec commands."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

# Seconds to wait for a started process to respond or to exit.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now (never 6379)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port != 6379:
            return port


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """Run a throwaway redis-server on a free 127.0.0.1 port; yield its URL and stop it after.

    Raises RuntimeError when redis-server is not installed or does not respond in time.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH; install it to run the bench")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--notify-keyspace-events", "Kgz"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, process)
        yield url
    finally:
        stop_process(process)


def _wait_for_redis(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited at start with code {process.returncode}")
        try:
            redis.Redis.from_url(url).ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not respond at {url} within {START_TIMEOUT} s")


def start_streamrec(args: list[str], data_dir: Path, redis_url: str, log_path: Path) -> subprocess.Popen:
    """Start `streamrec ARGS` as a child process with its own data directory and Redis."""
    env = {**os.environ, "REDIS_URL": redis_url, "STREAMREC_DATA_DIR": str(data_dir)}
    # STREAMREC_BENCH_VERBOSE=1 logs every batch and refresh round (DEBUG), for --keep-work.
    verbose = ["-v"] if os.environ.get("STREAMREC_BENCH_VERBOSE") else []
    # The child keeps its own copy of the file descriptor, so ours can be closed at once.
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *verbose, *args], env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )


def stop_process(process: subprocess.Popen) -> None:
    """Ask a child to stop with SIGTERM and kill it when it does not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
