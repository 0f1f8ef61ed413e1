"""`streamrec worker` outlives a restart of its Redis server, takes jobs after it, and stops on
SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest
import redis

from cli.bench.services import free_port
from tests.system.cluster import Processes, wait_for
from worker.queues import enqueue_pending_job, refresh_queue

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def start_redis(port: int, directory) -> subprocess.Popen:
    process = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    connection = redis.Redis(port=port)
    wait_for(lambda: _answers(connection), 10, f"redis-server on port {port} did not start")
    return process


def _answers(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.ConnectionError:
        return False


def test_worker_survives_redis_restart(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    processes = Processes(tmp_path, url)
    try:
        processes.start("worker", "worker", "--queues", "refresh")
        wait_for(lambda: "worker started" in processes.log_text("worker"), 60, "worker did not start",
                 processes)

        server.send_signal(signal.SIGKILL)
        server.wait()
        server = start_redis(port, tmp_path)

        connection = redis.Redis.from_url(url)
        job = enqueue_pending_job(connection)
        queue = refresh_queue(connection)
        wait_for(lambda: job.id in queue.finished_job_registry.get_job_ids(), 60,
                 "job after the restart was not run", processes)
        processes.assert_alive()
        # The Redis restart may or may not end rq's work loop, depending on what it was doing.
        restarts_before_stop = processes.log_text("worker").count("starting a new one")
        exit_code = processes.stop("worker")
    finally:
        processes.stop_all()
        server.kill()
        server.wait()

    # A stop request ends the process rather than starting another worker.
    assert exit_code == 0
    assert processes.log_text("worker").count("starting a new one") == restarts_before_stop
