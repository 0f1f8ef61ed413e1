"""work_until_stopped: a new rq worker after an unexpected end, none after a stop request."""

from __future__ import annotations

import pytest
import redis

import worker.runner as runner


class FakeWorker:
    """Stands in for rq's SimpleWorker; each instance ends its work() the next way in `endings`."""

    endings: list[str] = []
    created: list[FakeWorker] = []

    def __init__(self, queues, **kwargs) -> None:
        self.name = f"fake-{len(FakeWorker.created)}"
        self._stop_requested = False
        self._shutdown_requested_date = None
        FakeWorker.created.append(self)

    def work(self, burst: bool, logging_level: str) -> bool:
        ending = FakeWorker.endings.pop(0)
        if ending == "connection error":
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1")
        if ending == "stop requested":
            self._shutdown_requested_date = "now"
        return False


@pytest.fixture
def fake_workers(monkeypatch):
    FakeWorker.created = []
    monkeypatch.setattr(runner, "LeasedJobWorker", FakeWorker)
    monkeypatch.setattr(runner, "RESTART_FIRST_DELAY", 0.01)
    return FakeWorker


def test_new_worker_after_unexpected_end(fake_workers, caplog):
    fake_workers.endings = ["unhandled exception", "connection error", "stop requested"]

    runner.work_until_stopped(connection=None, queues=[], burst=False)

    assert len(fake_workers.created) == 3
    assert fake_workers.endings == []
    assert sum("starting a new one" in message for message in caplog.messages) == 2


def test_stop_request_ends_at_once(fake_workers):
    fake_workers.endings = ["stop requested"]

    runner.work_until_stopped(connection=None, queues=[], burst=False)

    assert len(fake_workers.created) == 1


def test_burst_ends_after_one_worker(fake_workers):
    fake_workers.endings = ["queues empty"]

    runner.work_until_stopped(connection=None, queues=[], burst=True)

    assert len(fake_workers.created) == 1


def test_unknown_rq_release_counts_as_stopped():
    class Bare:
        pass

    assert runner.stop_requested(Bare())
