"""How `streamrec retrain --wait` reports progress and a worker that died under the job."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rq import Worker

from cli.operator_commands import _progress_value, _worker_is_gone

pytestmark = pytest.mark.redis


def test_progress_floats_are_shortened():
    assert _progress_value(0.5823564405786552) == "0.5824"
    assert _progress_value(3) == "3"


def test_job_of_a_vanished_worker_is_reported(redis_client):
    assert _worker_is_gone(redis_client, SimpleNamespace(worker_name="worker-that-died"))


def test_job_of_a_live_worker_is_not_reported(redis_client):
    worker = Worker(["retrain"], connection=redis_client, name="live-worker")
    worker.register_birth()
    worker.heartbeat()
    try:
        assert not _worker_is_gone(redis_client, SimpleNamespace(worker_name="live-worker"))
    finally:
        worker.register_death()
