"""worker.heartbeat: a running job's registry entry renewed as a short lease, on real Redis."""

from __future__ import annotations

import time

import pytest
import redis
from rq import Queue, get_current_job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

import worker.heartbeat as heartbeat
from worker.heartbeat import LeasedJobWorker

pytestmark = pytest.mark.redis

QUEUE = "test-leases"


def job_outliving_its_lease(seconds: float) -> list:
    """Sleep past the lease, then return which started jobs rq would call abandoned now."""
    time.sleep(seconds)
    job = get_current_job()
    registry = StartedJobRegistry(job.origin, connection=job.connection)
    return [str(job_id) for job_id in registry.get_expired_job_ids()]


@pytest.fixture
def short_lease(monkeypatch):
    monkeypatch.setattr(heartbeat, "JOB_LEASE_SECONDS", 2)
    monkeypatch.setattr(heartbeat, "JOB_RENEW_SECONDS", 0.3)


def run_burst(connection: redis.Redis) -> None:
    queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    LeasedJobWorker([queue], connection=connection, serializer=JSONSerializer).work(burst=True)


def test_lease_renewed_while_job_runs(redis_client, short_lease):
    queue = Queue(QUEUE, connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue(f"{__name__}.job_outliving_its_lease", 3.0)

    run_burst(redis_client)

    job.refresh()
    assert job.get_status() == "finished"
    assert job.return_value() == []  # not abandoned at 3 s, past the 2 s lease


def test_finished_job_not_put_back(redis_client, short_lease):
    queue = Queue(QUEUE, connection=redis_client, serializer=JSONSerializer)
    queue.enqueue(f"{__name__}.job_outliving_its_lease", 0.7)

    run_burst(redis_client)
    time.sleep(1.0)  # longer than a renewal interval

    assert StartedJobRegistry(QUEUE, connection=redis_client).get_job_ids() == []


def test_lease_of_dead_worker_expires(redis_client, short_lease):
    # A worker that died after taking the job renews nothing: rq may retry it once the lease ends,
    # not after the job's one-hour timeout.
    queue = Queue(QUEUE, connection=redis_client, serializer=JSONSerializer)
    job = queue.enqueue(f"{__name__}.job_outliving_its_lease", 3.0, job_timeout=3600)
    worker = LeasedJobWorker([queue], connection=redis_client, serializer=JSONSerializer)
    worker.register_birth()
    worker.prepare_execution(job)
    registry = StartedJobRegistry(QUEUE, connection=redis_client)

    assert registry.get_expired_job_ids() == []
    time.sleep(2.5)
    assert [str(job_id) for job_id in registry.get_expired_job_ids()] == [job.id]


def test_maintenance_step_runs_after_rqs(redis_client):
    calls = []
    queue = Queue("test-maintenance", connection=redis_client, serializer=JSONSerializer)
    worker = LeasedJobWorker(
        [queue], connection=redis_client, serializer=JSONSerializer, maintenance=lambda: calls.append(1)
    )

    worker.run_maintenance_tasks()

    assert calls == [1]
