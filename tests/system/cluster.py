"""Start streamrec's long-lived processes for system tests, and wait on what they do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis

from store import keys
from worker.queues import refresh_queue

REPO_ROOT = Path(__file__).resolve().parents[2]


class Processes:
    """`streamrec ingest` and workers on one data directory; logs go to files for the assertions."""

    def __init__(self, data_dir: Path, redis_url: str) -> None:
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.logs: dict[str, Path] = {}
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *arguments: str) -> None:
        env = {**os.environ, "STREAMREC_DATA_DIR": str(self.data_dir), "REDIS_URL": self.redis_url}
        log_path = self.data_dir / f"{name}.log"
        self.logs[name] = log_path
        self.running[name] = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *arguments],
            env=env, cwd=REPO_ROOT, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
        )

    def stop(self, name: str) -> int:
        process = self.running.pop(name)
        process.terminate()
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def log_text(self, name: str) -> str:
        return self.logs[name].read_text()

    def assert_alive(self) -> None:
        for name, process in self.running.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}:\n{self.log_text(name)}"


def wait_for(condition, timeout: float, message: str, processes: Processes | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processes is not None:
            processes.assert_alive()
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def ingest_idle(connection: redis.Redis) -> bool:
    """No unread or unacknowledged events, no pending, queued or running refresh, no open request."""
    if not connection.exists(keys.EVENTS_STREAM):
        return True
    groups = connection.xinfo_groups(keys.EVENTS_STREAM)
    if not groups or any(g["pending"] or g.get("lag") for g in groups):
        return False
    if connection.llen(keys.EXPORT_REQUESTS):
        return False
    if connection.exists(keys.REFRESH_PENDING):
        return False
    queue = refresh_queue(connection)
    return queue.count == 0 and queue.started_job_registry.count == 0
