"""The pending-refresh job under a real SimpleWorker, and coalescing from push to list."""

from __future__ import annotations

import struct
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

import als
import worker.context
import worker.drain
from ingest.client import RatingClient
from ingest.consumer import IngestConsumer
from store import keys
from store.database import Database
from store.movielens import load_ratings_and_movies
from store.snapshots import SnapshotStore, model_of
from store.user_rows import UserRows
from store.user_state import read_user_state
from worker.pending import PendingRefreshes, PendingUser
from worker.queues import PENDING_JOB, RefreshEnqueuer, refresh_queue
from worker.retrain import load_ratings, publish_snapshot, run_retrain, train_model

pytestmark = pytest.mark.redis

ROWS = [(f"u{u}", str(i), float(1 + (u + i) % 5), 1000 + 10 * u + i) for u in range(8) for i in (1, 2, 3)]


@pytest.fixture
def published(tiny_catalogue, redis_client, monkeypatch):
    catalogue = tiny_catalogue(ROWS)
    run_retrain(catalogue.settings, redis_client, als.ALSConfig(factors=3, epochs=4))
    monkeypatch.setattr(worker.context, "_settings", catalogue.settings)
    return catalogue.settings


@pytest.fixture
def refreshed_users(monkeypatch) -> list[str]:
    """Every user id the pending-refresh job folds in, once per refresh."""
    calls: list[str] = []
    real = worker.drain.refresh_users

    def recording(connection, snapshot, users, seq, top_n, newer_only=None):
        calls.extend(users)
        return real(connection, snapshot, users, seq, top_n, newer_only)

    monkeypatch.setattr(worker.drain, "refresh_users", recording)
    return calls


class BurstWorker(SimpleWorker):
    """A SimpleWorker without rq's command channel. Closing that channel's pubsub can wait up to
    60 s for its listener thread, and these tests start many short burst workers."""

    def subscribe(self) -> None:
        pass


def assert_refolded(state, snapshot, complete: tuple[np.ndarray, np.ndarray]) -> None:
    """Check a user state against a fold-in of the user's complete (item ids, stars)."""
    model, config = model_of(snapshot)
    item_idx = snapshot.item_indices(complete[0].tolist())
    order = np.argsort(item_idx)
    bias, factors = als.fold_in(item_idx[order].astype(np.int32), complete[1][order], model, config)
    assert state.seen_idx.tolist() == sorted(item_idx.tolist())
    assert state.bias == pytest.approx(bias, abs=1e-6)
    np.testing.assert_allclose(state.factors, factors, atol=1e-6)


def run_worker_burst(redis_client) -> None:
    BurstWorker([refresh_queue(redis_client)], connection=redis_client, serializer=JSONSerializer).work(
        burst=True, logging_level="WARNING"
    )


def test_job_writes_each_user_at_own_seq(published, redis_client, refreshed_users):
    enqueue = RefreshEnqueuer(redis_client, quiet_ms=0)
    enqueue({"a": (np.array(["1"]), np.array([5.0], np.float32))}, 4)
    enqueue({"b": (np.array(["2", "3"]), np.array([1.0, 2.0], np.float32))}, 6)

    run_worker_burst(redis_client)

    assert sorted(refreshed_users) == ["a", "b"]
    assert read_user_state(redis_client, "a").seq == 4
    assert read_user_state(redis_client, "b").seq == 6
    assert PendingRefreshes(redis_client).count() == 0
    assert not redis_client.exists(keys.REFRESH_SCHEDULED)
    assert not redis_client.keys(keys.refresh_taken_key("*"))


def test_retried_job_refreshes_users_it_had_taken(published, redis_client):
    # A worker died after its job took "a": the job id's taken hash is all that is left.
    pending = PendingRefreshes(redis_client, quiet_ms=0)
    pending.add({"a": (np.array(["1"]), np.array([5.0], np.float32))}, seq=4)
    job = refresh_queue(redis_client).enqueue(PENDING_JOB)
    pending.take_due(job.id, max_users=10)
    assert pending.count() == 0

    run_worker_burst(redis_client)

    assert read_user_state(redis_client, "a").seq == 4
    assert not redis_client.exists(keys.refresh_taken_key(job.id))


def test_failed_round_puts_users_back(published, redis_client, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated fold-in failure")

    monkeypatch.setattr(worker.drain, "refresh_users", fail)
    RefreshEnqueuer(redis_client, quiet_ms=0)({"a": (np.array(["1"]), np.array([5.0], np.float32))}, 4)

    run_worker_burst(redis_client)

    assert read_user_state(redis_client, "a") is None
    assert PendingRefreshes(redis_client).count() == 1
    assert not redis_client.keys(keys.refresh_taken_key("*"))


def test_job_without_snapshot_leaves_users_pending(tiny_catalogue, redis_client, monkeypatch):
    catalogue = tiny_catalogue(ROWS)
    monkeypatch.setattr(worker.context, "_settings", catalogue.settings)
    RefreshEnqueuer(redis_client, quiet_ms=0)({"a": (np.array(["1"]), np.array([5.0], np.float32))}, 4)

    run_worker_burst(redis_client)

    assert PendingRefreshes(redis_client).count() == 1
    assert not redis_client.exists(keys.REFRESH_SCHEDULED)


def test_fifty_ratings_in_a_second_refresh_once(published, redis_client, redis_url, refreshed_users):
    """50 ratings pushed one at a time while consumer and worker run end in one refresh."""
    user_id = "burst"
    # Items 1 and 2 alternate with changing ratings. The 50th rating is the only one of item 3.
    events = [(str(1 + n % 2), float(1 + n % 5)) for n in range(49)] + [("3", 4.5)]
    stop = threading.Event()

    with Database(published.database_path, keep_index=True) as database:
        # A wide window, so a slow test machine does not split the burst.
        enqueue = RefreshEnqueuer(redis_client, quiet_ms=1000, max_delay_ms=10_000)
        consumer = IngestConsumer(published, redis_client, database, enqueue)
        consumer_thread = threading.Thread(target=consumer.run, args=(stop,))
        consumer_thread.start()

        def push_one_at_a_time() -> None:
            client = RatingClient(redis_client)
            for n, (item_id, rating) in enumerate(events):
                client.push(user_id, item_id, rating, timestamp=5000 + n)
                time.sleep(0.02)

        pusher = threading.Thread(target=push_one_at_a_time)
        pusher.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                run_worker_burst(redis_client)
                state = read_user_state(redis_client, user_id)
                if not pusher.is_alive() and state is not None and state.seen_idx.size == 3:
                    break
                time.sleep(0.02)
        finally:
            pusher.join()
            stop.set()
            consumer_thread.join()
        final = database.user_ratings([user_id])[user_id]

    assert refreshed_users.count(user_id) == 1
    assert PendingRefreshes(redis_client).count() == 0
    listed = {member.decode() for member in redis_client.zrange(keys.recs_key(user_id), 0, -1)}
    assert listed == {"4"}

    snapshot = SnapshotStore(published.snapshots_dir).open()
    model, config = model_of(snapshot)
    item_idx = snapshot.item_indices(list(final[0]))
    order = np.argsort(item_idx)
    bias, factors = als.fold_in(item_idx[order].astype(np.int32), final[1][order], model, config)
    state = read_user_state(redis_client, user_id)
    assert dict(zip(final[0].tolist(), final[1].tolist()))["3"] == 4.5
    assert state.bias == pytest.approx(bias, abs=1e-6)
    np.testing.assert_allclose(state.factors, factors, atol=1e-6)


def test_job_records_progress(published, redis_client):
    RefreshEnqueuer(redis_client, quiet_ms=0)({"a": (np.array(["1"]), np.array([5.0], np.float32))}, 4)

    run_worker_burst(redis_client)

    registry = refresh_queue(redis_client).finished_job_registry
    job = refresh_queue(redis_client).fetch_job(registry.get_job_ids()[0])
    progress = job.get_meta()["progress"]
    assert progress["stage"] == "refreshing"
    assert progress["rounds"] == 1
    assert progress["users"] == 1


def test_snapshot_of_other_database_by_ids(published, redis_client, refreshed_users, tmp_path):
    """A snapshot kept while the database was reloaded in another item order gets the right items."""
    snapshot = SnapshotStore(published.snapshots_dir).open()
    with Database(tmp_path / "reloaded.duckdb", keep_index=True) as reloaded:
        # Here item "3" gets index 0 and item "1" index 1, unlike in the snapshot.
        reloaded.apply_rating_columns(
            ["x", "x"], ["3", "1"], np.array([5.0, 1.0], np.float32), np.array([1, 1])
        )
        RefreshEnqueuer(redis_client, quiet_ms=0)(reloaded.user_rows(["x"]), 1)

    run_worker_burst(redis_client)

    state = read_user_state(redis_client, "x")
    assert state.seen_idx.tolist() == sorted([snapshot.item_index("1"), snapshot.item_index("3")])


def pending_user(seq: int, since_seq: int | None) -> PendingUser:
    return PendingUser(seq, np.array([4.0], np.float32), decoded_ids=["1"], since_seq=since_seq)


@pytest.mark.parametrize(
    "since_seq, seq, kept",
    [
        (None, 3, True),  # complete ratings fit any snapshot
        (10, 10, True),  # taken in the batch that made the watermark
        (10, 14, True),  # the entry's base is the snapshot's watermark
        (8, 14, True),  # an older base: the entry also contains ratings up to 10
        (11, 14, False),  # the snapshot misses ratings 11 and below
        (4, 9, True),  # the snapshot already contains every rating of the entry
    ],
)
def test_split_by_snapshot_watermark(since_seq, seq, kept):
    snapshot = SimpleNamespace(version=3, watermark=10, seen_ratings=np.ones(1, np.float32))

    usable, dropped = worker.drain.split_by_snapshot({"a": pending_user(seq, since_seq)}, snapshot)

    assert ("a" in usable) is kept
    assert dropped == (0 if kept else 1)


def test_split_refolds_older_entry_from_snapshot():
    snapshot = SimpleNamespace(version=3, watermark=10, seen_ratings=np.ones(1, np.float32))

    usable, _ = worker.drain.split_by_snapshot({"a": pending_user(9, 4)}, snapshot)

    assert usable["a"].seq == 10
    assert usable["a"].since_seq == 10
    assert usable["a"].item_ids == []
    assert len(usable["a"].ratings) == 0


def test_entry_older_than_unfinished_publication(published, redis_client):
    """An entry the new snapshot already contains is refolded before the publication's lists."""
    with Database(published.database_path, keep_index=True) as database:
        database.apply_rating_columns(["u1"], ["4"], np.array([5.0], np.float32), np.array([9000]))
        entry = database.user_rows(["u1"], since_seq=0)
        database.apply_rating_columns(["u2"], ["4"], np.array([1.0], np.float32), np.array([9000]))
        complete = database.user_ratings(["u1"])["u1"]
    # A retrain worker killed after publishing: no list is written for the new version.
    data = load_ratings(published, None)
    config = als.ALSConfig(factors=3, epochs=4)
    version = publish_snapshot(published, data, train_model(data, config, lambda *_: None), config, {})
    RefreshEnqueuer(redis_client, quiet_ms=0)(entry, 1)

    run_worker_burst(redis_client)

    snapshot = SnapshotStore(published.snapshots_dir).open()
    state = read_user_state(redis_client, "u1")
    assert snapshot.watermark == 2
    assert state.version == version
    assert state.seq == 2
    assert_refolded(state, snapshot, complete)


def test_split_drops_newer_only_without_training_ratings():
    snapshot = SimpleNamespace(version=3, watermark=10, seen_ratings=None)
    batch = {"a": pending_user(12, 10), "b": pending_user(12, None)}

    usable, dropped = worker.drain.split_by_snapshot(batch, snapshot)

    assert list(usable) == ["b"]
    assert dropped == 1


def test_round_of_passed_over_entries_succeeds(published, redis_client):
    """A round whose every entry the snapshot cannot complete ends the job without an error."""
    watermark = SnapshotStore(published.snapshots_dir).open().watermark
    newer_than_snapshot = UserRows(
        ["u1"], np.array([0, 1]), np.zeros(1, np.int32), np.array([4.0], np.float32),
        np.array(["1"], dtype=object), since_seq=watermark + 5,
    )
    RefreshEnqueuer(redis_client, quiet_ms=0)(newer_than_snapshot, watermark + 6)

    run_worker_burst(redis_client)

    queue = refresh_queue(redis_client)
    (job_id,) = queue.finished_job_registry.get_job_ids()
    # rq retries a job that raised, and the retry finds nothing to take, so only the result
    # of the first run shows the skipped entry.
    result = queue.fetch_job(job_id).return_value()
    assert result["skipped"] == 1
    assert result["rounds"] == 1
    assert not redis_client.keys(keys.refresh_taken_key("*"))
    assert not redis_client.exists(keys.REFRESH_SCHEDULED)
    assert read_user_state(redis_client, "u1").seq == watermark


def consume_one_rating(settings, redis_client, user_id: str, item_id: str, stars: float):
    """Push one rating, let a consumer commit it, and return the user's complete ratings."""
    RatingClient(redis_client).push(user_id, item_id, stars, timestamp=9000)
    with Database(settings.database_path, keep_index=True) as database:
        consumer = IngestConsumer(settings, redis_client, database, RefreshEnqueuer(redis_client, quiet_ms=0))
        while consumer.process_once():
            pass
        return database.user_ratings([user_id])[user_id]


def test_consumer_sends_only_newer_ratings(published, redis_client):
    """A known user's new rating travels alone, and the refresh matches a fold of all ratings."""
    complete = consume_one_rating(published, redis_client, "u2", "2", 0.5)

    entry = redis_client.hget(keys.REFRESH_PENDING, "u2")
    body = entry.partition(b"\n")[2]
    assert body[:1] == b"D"
    assert struct.unpack_from("<qI", body, 1) == (SnapshotStore(published.snapshots_dir).open().watermark, 1)

    run_worker_burst(redis_client)

    assert len(complete[0]) == 3
    assert_refolded(read_user_state(redis_client, "u2"), SnapshotStore(published.snapshots_dir).open(), complete)


def test_bulk_load_after_snapshot_sends_complete_ratings(published, redis_client, tmp_path):
    """Bulk-loaded rows are in neither the snapshot nor the batches after its watermark."""
    more = tmp_path / "more.csv"
    more.write_text("userId,movieId,rating,timestamp\nu2,4,1.5,2000\n")
    with Database(published.database_path) as database:
        load_ratings_and_movies(database, more)
    complete = consume_one_rating(published, redis_client, "u2", "2", 0.5)

    body = redis_client.hget(keys.REFRESH_PENDING, "u2").partition(b"\n")[2]
    run_worker_burst(redis_client)

    snapshot = SnapshotStore(published.snapshots_dir).open()
    known = [item for item in complete[0].tolist() if snapshot.item_index(item) is not None]
    state = read_user_state(redis_client, "u2")
    assert body[:1] == b"I"
    assert sorted(complete[0].tolist()) == ["1", "2", "3", "4"]
    assert state.seen_idx.tolist() == sorted(snapshot.item_index(item) for item in known)
