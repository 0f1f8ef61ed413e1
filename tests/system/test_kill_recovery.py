"""SIGKILL the ingest consumer in the middle of a stream: after a restart nothing is lost."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from ingest.client import RatingClient
from store.database import Database
from store.settings import Settings
from tests.system.cluster import Processes, ingest_idle, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_consumer_killed_twice_loses_nothing(tmp_path, redis_url, redis_client):
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    rng = np.random.default_rng(11)
    # Repeated (user, item) pairs with rising timestamps: the latest one must win after recovery.
    events = [
        {"user_id": f"u{u}", "item_id": str(i), "rating": float(r), "timestamp": 1_000_000 + k}
        for k, (u, i, r) in enumerate(zip(
            rng.integers(0, 300, 30_000), rng.integers(0, 400, 30_000), rng.integers(1, 11, 30_000) / 2
        ))
    ]
    latest = {(e["user_id"], e["item_id"]): e["rating"] for e in events}

    processes = Processes(tmp_path, redis_url)
    processes.start("ingest", "ingest")
    client = RatingClient(redis_client)
    first_kill_done = threading.Event()
    try:
        def push() -> None:
            for start in range(0, len(events), 500):
                # The second half waits for the first kill, so events are still arriving when
                # the second kill comes, however fast the client and the consumer are.
                if start == len(events) // 2:
                    first_kill_done.wait(timeout=60)
                client.push_many(events[start:start + 500])
                time.sleep(0.01)

        pusher = threading.Thread(target=push)
        pusher.start()
        for _ in range(2):
            # Each kill hits a consumer with events read but unacknowledged, or not yet read.
            _freeze_with_outstanding(processes, redis_client)
            processes.running["ingest"].send_signal(signal.SIGKILL)
            processes.running["ingest"].wait(timeout=10)
            processes.start("ingest", "ingest")
            first_kill_done.set()
        pusher.join()
        # Refresh jobs are queued but no worker runs here; only the stream must drain.
        wait_for(lambda: _stream_drained(redis_client), 120, "stream drained", processes)
    finally:
        processes.stop_all()

    with Database(settings.database_path, read_only=True) as database:
        data = database.ratings_arrays()
    stored = {
        (str(data.user_ids[u]), str(data.item_ids[i])): float(r)
        for u, i, r in zip(data.user_idx, data.item_idx, data.rating)
    }
    assert len(stored) == len(latest)
    mismatched = [pair for pair, rating in latest.items() if stored.get(pair) != rating]
    assert mismatched == []


def _outstanding(connection) -> int:
    """Events in the stream that the consumer group has not acknowledged yet (pending + lag)."""
    if not connection.exists("streamrec:events"):
        return 0
    groups = connection.xinfo_groups("streamrec:events")
    return sum(g["pending"] + (g.get("lag") or 0) for g in groups)


def _stream_drained(connection) -> bool:
    groups = connection.xinfo_groups("streamrec:events")
    return bool(groups) and all(g["pending"] == 0 and not g.get("lag") for g in groups)


def _freeze_with_outstanding(processes: Processes, connection) -> int:
    """Stop the consumer with SIGSTOP at a moment it has outstanding events; return their count.

    A stopped consumer cannot acknowledge, so the count stays valid until the kill. A consumer that
    caught up in the instant before the stop is resumed and stopped again later.
    """
    consumer = processes.running["ingest"]
    for _ in range(50):
        wait_for(lambda: _outstanding(connection) > 0, 30, "events waiting for the consumer", processes)
        consumer.send_signal(signal.SIGSTOP)
        count = _outstanding(connection)
        if count:
            return count
        consumer.send_signal(signal.SIGCONT)
    raise AssertionError("the consumer had no outstanding events at any of 50 stops")
