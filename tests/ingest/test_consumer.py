"""ingest.consumer end to end: real Redis (test database), a fresh DuckDB file per test."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis

from ingest.client import RatingClient
from ingest.consumer import DEAD_LETTER_LOG_LIMIT, IngestConsumer
from ingest.group_reader import GroupReader
from ingest.requests import serve_requests
from store.database import Database, read_export
from store.errors import ConsumerConflictError, ExportTimeoutError
from store.exports import request_export, request_refold
from store.keys import (
    DEAD_LETTER_STREAM, EVENTS_STREAM, EXPORT_REQUESTS, EXPORT_REQUESTS_SERVING, INGEST_GROUP,
)
from store.settings import Settings

pytestmark = pytest.mark.redis


class RefreshRecorder:
    """Stands in for the worker's enqueuer: keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]] = []

    def __call__(self, user_ratings, seq) -> None:
        self.calls.append((user_ratings, seq))

    def users(self) -> list[str]:
        return [user_id for user_ratings, _ in self.calls for user_id in user_ratings]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, ingest_block_ms=0, ingest_batch_size=100, redis_url=None)


@pytest.fixture(params=[True, False], ids=["indexed", "sql"])
def db(settings: Settings, request: pytest.FixtureRequest) -> Database:
    """The database as `streamrec ingest` opens it (with the rating index), and without."""
    with Database(settings.database_path, keep_index=request.param) as database:
        yield database


@pytest.fixture
def refresh() -> RefreshRecorder:
    return RefreshRecorder()


def make_consumer(settings, redis_client, db, refresh, name="ingest-1") -> IngestConsumer:
    return IngestConsumer(settings, redis_client, db, refresh, consumer_name=name)


def drain(consumer: IngestConsumer) -> int:
    """Call process_once until a call handles no entry; return the entries handled."""
    total = 0
    while handled := consumer.process_once():
        total += handled
    return total


def ratings_of(db: Database, user_id: str) -> dict[str, float]:
    result = db.user_ratings([user_id])
    if user_id not in result:
        return {}
    item_ids, ratings = result[user_id]
    return dict(zip(item_ids.tolist(), ratings.tolist()))


def pending_count(connection: redis.Redis) -> int:
    return connection.xpending(EVENTS_STREAM, INGEST_GROUP)["pending"]


def crash_before_commit(consumer: IngestConsumer, db: Database, monkeypatch) -> None:
    """Run one batch of `consumer` that fails as if killed just before its commit."""

    def crash(*args, **kwargs):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(db, "apply_rating_columns", crash)
    with pytest.raises(RuntimeError):
        consumer.process_once()
    monkeypatch.undo()


def test_pushed_events_reach_database(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    client.push("alice", 1, 4.0, timestamp=100)
    client.push("alice", 2, 3.5, timestamp=101)
    client.push("bob", 1, 5.0, timestamp=102)
    consumer = make_consumer(settings, redis_client, db, refresh)

    assert drain(consumer) == 3

    assert ratings_of(db, "alice") == {"1": 4.0, "2": 3.5}
    assert ratings_of(db, "bob") == {"1": 5.0}
    assert pending_count(redis_client) == 0
    assert len(refresh.calls) == 1
    user_ratings, seq = refresh.calls[0]
    assert seq == 1
    assert sorted(user_ratings) == ["alice", "bob"]
    assert user_ratings["alice"][0].tolist() == ["1", "2"]
    assert user_ratings["alice"][1].tolist() == [4.0, 3.5]
    assert db.ingest_progress(EVENTS_STREAM)[1] == 1


def test_missing_timestamp_from_stream_id(settings, redis_client, db, refresh):
    stream_id = RatingClient(redis_client).push("alice", 1, 4.0)
    drain(make_consumer(settings, redis_client, db, refresh))

    stored = db.ratings_arrays().timestamp.tolist()
    assert stored == [int(stream_id.split("-")[0]) // 1000]


@pytest.mark.parametrize("fields", [
    {"user_id": "alice", "item_id": "2", "rating": "5"},  # the column path
    {"user_id": "alice", "item_id": "2", "rating": "5", "extra": "x"},  # the single-entry path
])
def test_entry_id_in_future_gets_clock_time(settings, redis_client, db, refresh, fields):
    # Year 2100: every id Redis makes after it is later still, so its time must not be used.
    redis_client.xadd(EVENTS_STREAM, fields, id="4102444800000-0")
    RatingClient(redis_client).push("alice", 3, 2.0)
    before = int(time.time())
    drain(make_consumer(settings, redis_client, db, refresh))

    timestamps = db.ratings_arrays().timestamp.tolist()
    assert len(timestamps) == 2
    assert all(before - 5 <= stamp <= time.time() + 1 for stamp in timestamps)


def commit_future_entry_then_drop_stream(consumer: IngestConsumer, connection: redis.Redis) -> None:
    """Commit one entry whose id lies far in the future, then delete the stream, as a Redis
    restart without persistence does."""
    connection.xadd(EVENTS_STREAM, {"user_id": "alice", "item_id": "1", "rating": "4", "timestamp": "100"},
                    id="4102444800000-0")
    drain(consumer)
    connection.delete(EVENTS_STREAM)


def test_recreated_stream_with_lower_ids_is_applied(settings, redis_client, db, refresh):
    consumer = make_consumer(settings, redis_client, db, refresh)
    commit_future_entry_then_drop_stream(consumer, redis_client)
    RatingClient(redis_client).push("bob", 2, 3.5, timestamp=200)
    RatingClient(redis_client).push("carol", 3, 5.0, timestamp=300)
    drain(consumer)
    drain(consumer)

    assert ratings_of(db, "bob") == {"2": 3.5}
    assert ratings_of(db, "carol") == {"3": 5.0}


def test_recreated_stream_pending_batch_is_applied(settings, redis_client, db, refresh):
    # The committed id 4102444800000-0 belongs to the stream before its deletion. Entries of the
    # new stream that a killed consumer read but never committed lie below it, and must still be
    # applied when the next consumer reads them again as pending entries.
    consumer = make_consumer(settings, redis_client, db, refresh)
    commit_future_entry_then_drop_stream(consumer, redis_client)
    consumer.process_once()  # finds the group missing
    consumer.process_once()  # creates it again at id 0
    RatingClient(redis_client).push("bob", 2, 3.5, timestamp=200)
    RatingClient(redis_client).push("carol", 3, 5.0, timestamp=300)
    redis_client.xreadgroup(INGEST_GROUP, "ingest-1", {EVENTS_STREAM: ">"})  # then killed

    drain(make_consumer(settings, redis_client, db, refresh))

    assert ratings_of(db, "bob") == {"2": 3.5}
    assert ratings_of(db, "carol") == {"3": 5.0}
    assert pending_count(redis_client) == 0


def test_pending_of_renamed_consumer_applied(settings, redis_client, db, refresh):
    # ingest-1 read the first batch and was killed before committing it. The consumer started in
    # its place under another name must apply that batch, and must not commit later entries
    # first: their id would then mark the older batch as committed when ingest-1 comes back.
    make_consumer(settings, redis_client, db, refresh).process_once()
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    redis_client.xreadgroup(INGEST_GROUP, "ingest-1", {EVENTS_STREAM: ">"})  # then killed
    RatingClient(redis_client).push("bob", 2, 3.5, timestamp=200)

    drain(make_consumer(settings, redis_client, db, refresh, name="ingest-2"))

    assert ratings_of(db, "alice") == {"1": 4.0}
    assert ratings_of(db, "bob") == {"2": 3.5}
    assert pending_count(redis_client) == 0


def test_invalid_events_dead_lettered(settings, redis_client, db, refresh, caplog):
    redis_client.xadd(EVENTS_STREAM, {"user_id": "alice", "item_id": "1", "rating": "4"})
    bad_id = redis_client.xadd(EVENTS_STREAM, {"user_id": "alice", "item_id": "2", "rating": "7"}).decode()
    missing_id = redis_client.xadd(EVENTS_STREAM, {"user_id": "bob", "rating": "3"}).decode()
    redis_client.xadd(EVENTS_STREAM, {"user_id": "bob", "item_id": "3", "rating": "2.5"})

    with caplog.at_level(logging.INFO, logger="ingest.consumer"):
        assert drain(make_consumer(settings, redis_client, db, refresh)) == 4

    assert ratings_of(db, "alice") == {"1": 4.0}
    assert ratings_of(db, "bob") == {"3": 2.5}
    assert pending_count(redis_client) == 0
    dead = [
        {key.decode(): value.decode() for key, value in fields.items()}
        for _, fields in redis_client.xrange(DEAD_LETTER_STREAM)
    ]
    assert dead == [
        {
            "user_id": "alice",
            "item_id": "2",
            "rating": "7",
            "reason": "rating: must be between 0.5 and 5.0, got 7",
            "stream_id": bad_id,
        },
        {"user_id": "bob", "rating": "3", "reason": "item_id: missing", "stream_id": missing_id},
    ]
    assert (
        f"event dead-lettered reason=rating: must be between 0.5 and 5.0, got 7 stream_id={bad_id}"
        in caplog.messages
    )


def test_dead_letter_keeps_clashing_and_repeated_fields(settings, redis_client, db, refresh):
    redis_client.execute_command(
        "XADD", EVENTS_STREAM, "*", "user_id", "alice", "item_id", "2", "rating", "4",
        "reason", "mine", "stream_id", "also mine", "note", "a", "note", "b", "original_reason", "c",
    )

    drain(make_consumer(settings, redis_client, db, refresh))

    # A client without redis-py's reply parsing, which turns an entry's fields into a dict.
    raw_client = redis.Redis(connection_pool=redis_client.connection_pool)
    raw_client.set_response_callback("XRANGE", lambda response, **options: response)
    [(_, fields)] = raw_client.xrange(DEAD_LETTER_STREAM)
    flat = [value.decode() for value in fields]
    assert flat[:16] == [
        "user_id", "alice", "item_id", "2", "rating", "4", "original_reason", "mine",
        "original_stream_id", "also mine", "note", "a", "note", "b", "original_original_reason", "c",
    ]
    assert flat[16:18] == ["reason", "note: given 2 times, got 'a' and 'b'"]
    assert flat[18] == "stream_id"
    assert ratings_of(db, "alice") == {}
    assert pending_count(redis_client) == 0


def test_consumer_trims_acknowledged_events(settings, redis_client, db, refresh):
    settings = settings.model_copy(update={"events_keep_seconds": 0.0})
    client = RatingClient(redis_client)
    for item in range(3):
        client.push("alice", str(item), 4.0)
    consumer = make_consumer(settings, redis_client, db, refresh)

    drain(consumer)

    assert redis_client.xlen(EVENTS_STREAM) == 0
    assert ratings_of(db, "alice") == {"0": 4.0, "1": 4.0, "2": 4.0}
    client.push("alice", "3", 4.0)
    drain(consumer)
    # The next trim waits for the interval, so the new event stays in the stream for now.
    assert redis_client.xlen(EVENTS_STREAM) == 1


def test_consumer_keeps_young_events(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    client.push("alice", "1", 4.0)

    drain(make_consumer(settings, redis_client, db, refresh))

    assert settings.events_keep_seconds == 3600.0
    assert redis_client.xlen(EVENTS_STREAM) == 1


def test_dead_letter_stream_keeps_the_newest(settings, redis_client, db, refresh):
    settings = settings.model_copy(update={"dead_letter_max_entries": 3})
    for value in range(5):
        redis_client.xadd(EVENTS_STREAM, {"user_id": "alice", "item_id": str(value), "rating": "9"})

    drain(make_consumer(settings, redis_client, db, refresh))

    dead_items = [fields[b"item_id"] for _, fields in redis_client.xrange(DEAD_LETTER_STREAM)]
    assert dead_items == [b"2", b"3", b"4"]


@pytest.mark.parametrize("batch_size", [1, 100])
def test_out_of_order_and_redelivered(settings, redis_client, db, refresh, batch_size):
    settings = settings.model_copy(update={"ingest_batch_size": batch_size})
    client = RatingClient(redis_client)
    for rating, timestamp in [(4.5, 2000), (2.0, 1000), (4.5, 2000), (2.0, 1000)]:
        client.push("alice", "movie", rating, timestamp=timestamp)

    drain(make_consumer(settings, redis_client, db, refresh))

    assert db.counts().ratings == 1
    assert ratings_of(db, "alice") == {"movie": 4.5}


def test_crash_after_commit_before_ack(settings, redis_client, db, refresh, monkeypatch):
    client = RatingClient(redis_client)
    client.push("alice", 1, 4.0, timestamp=100)
    client.push("bob", 2, 3.0, timestamp=100)
    crashing = make_consumer(settings, redis_client, db, refresh)

    def crash(*args, **kwargs):
        raise RuntimeError("killed between commit and XACK")

    # The consumer acknowledges valid entries with one packed XACK.
    monkeypatch.setattr("ingest.consumer.send_packed", crash)
    with pytest.raises(RuntimeError):
        crashing.process_once()
    monkeypatch.undo()
    committed = db.ratings_arrays()
    assert committed.nnz == 2
    assert pending_count(redis_client) == 2

    restarted = make_consumer(settings, redis_client, db, refresh)
    drain(restarted)

    after = db.ratings_arrays()
    assert pending_count(redis_client) == 0
    assert after.nnz == 2
    np.testing.assert_array_equal(after.rating, committed.rating)
    assert db.current_seq() == 1  # the recovered entries were not applied a second time
    assert sorted(refresh.users()[-2:]) == ["alice", "bob"]

    client.push("alice", 3, 5.0, timestamp=200)
    drain(restarted)
    assert ratings_of(db, "alice") == {"1": 4.0, "3": 5.0}
    assert db.current_seq() == 2


def test_crash_before_commit_loses_nothing(settings, redis_client, db, refresh, monkeypatch):
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    crash_before_commit(make_consumer(settings, redis_client, db, refresh), db, monkeypatch)
    assert db.counts().ratings == 0

    drain(make_consumer(settings, redis_client, db, refresh))

    assert ratings_of(db, "alice") == {"1": 4.0}
    assert pending_count(redis_client) == 0


def test_redis_error_retried(settings, redis_client, db, refresh, monkeypatch, caplog):
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    consumer = make_consumer(settings, redis_client, db, refresh)
    stop = threading.Event()
    pool = redis_client.connection_pool
    real_get_connection = pool.get_connection
    failures = []

    def flaky_get_connection(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise redis.ConnectionError("connection reset")
        return real_get_connection(*args, **kwargs)

    def refresh_then_stop(user_ratings, seq):
        refresh(user_ratings, seq)
        stop.set()

    monkeypatch.setattr(pool, "get_connection", flaky_get_connection)
    consumer.enqueue_refresh = refresh_then_stop
    with caplog.at_level(logging.WARNING, logger="ingest.consumer"):
        worker = threading.Thread(target=consumer.run, kwargs={"stop_event": stop})
        worker.start()
        worker.join(timeout=60)

    assert not worker.is_alive()
    assert ratings_of(db, "alice") == {"1": 4.0}
    retries = [message for message in caplog.messages if message.startswith("redis unavailable, retrying")]
    assert len(retries) == 2
    assert "delay_seconds=0.1" in retries[0]
    assert "delay_seconds=0.2" in retries[1]


def test_export_request_answered(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    client.push("alice", 1, 4.0, timestamp=100)
    client.push("bob", 2, 3.0, timestamp=100)
    consumer = make_consumer(settings, redis_client, db, refresh)
    drain(consumer)
    answers: list = []

    requester = threading.Thread(target=lambda: answers.append(request_export(redis_client, timeout=30)))
    requester.start()
    while requester.is_alive():
        consumer.process_once()
        requester.join(timeout=0.01)

    path, watermark, generation = answers[0]
    assert path == (settings.exports_dir / "ratings-00000001.parquet").resolve()
    assert watermark == 1
    assert generation == db.ratings_generation()
    exported = read_export(path)
    assert exported.nnz == 2
    assert exported.user_ids.tolist() == ["alice", "bob"]
    assert redis_client.llen(EXPORT_REQUESTS) == 0


def test_export_timeout_withdraws_request(redis_client):
    with pytest.raises(ExportTimeoutError, match="no ingest consumer answered the export request within 0.2 s"):
        request_export(redis_client, timeout=0.2)
    assert redis_client.llen(EXPORT_REQUESTS) == 0


def test_refold_request_enqueues_updated_users(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    consumer = make_consumer(settings, redis_client, db, refresh)
    client.push("alice", 1, 4.0, timestamp=100)
    drain(consumer)
    client.push("bob", 1, 2.0, timestamp=100)
    client.push("carol", 1, 2.0, timestamp=100)
    drain(consumer)
    refresh.calls.clear()

    request_refold(redis_client, 1)
    consumer.process_once()

    assert refresh.users() == ["bob", "carol"]
    assert refresh.calls[0][1] == 2
    assert redis_client.llen(EXPORT_REQUESTS) == 0


def test_request_taken_by_killed_consumer_is_served(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    client.push("alice", 1, 4.0, timestamp=100)
    drain(make_consumer(settings, redis_client, db, refresh))
    refresh.calls.clear()
    # A consumer killed while serving leaves the request in the serving list.
    redis_client.rpush(EXPORT_REQUESTS_SERVING, json.dumps({"kind": "refold_since", "seq": 0}))

    make_consumer(settings, redis_client, db, refresh).process_once()

    assert refresh.users() == ["alice"]
    assert redis_client.llen(EXPORT_REQUESTS_SERVING) == 0
    assert redis_client.llen(EXPORT_REQUESTS) == 0


def test_bad_request_dropped(settings, redis_client, db, refresh, caplog):
    redis_client.rpush(EXPORT_REQUESTS, "not json", json.dumps({"kind": "reboot"}))
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)

    with caplog.at_level(logging.WARNING, logger="ingest.requests"):
        drain(make_consumer(settings, redis_client, db, refresh))

    assert ratings_of(db, "alice") == {"1": 4.0}
    assert redis_client.llen(EXPORT_REQUESTS) == 0
    assert sum("request dropped" in message for message in caplog.messages) == 2


def test_refresh_failure_does_not_stop_ingest(settings, redis_client, db, caplog):
    def broken(user_ratings, seq):
        raise TypeError("cannot pickle")

    client = RatingClient(redis_client)
    client.push("alice", 1, 4.0, timestamp=100)
    consumer = make_consumer(settings, redis_client, db, broken)

    with caplog.at_level(logging.ERROR, logger="ingest.consumer"):
        drain(consumer)

    assert ratings_of(db, "alice") == {"1": 4.0}
    assert pending_count(redis_client) == 0
    assert any(message.startswith("refresh enqueue failed") for message in caplog.messages)


def test_batch_restores_garbage_collection(settings, redis_client, db, refresh):
    import gc

    client = RatingClient(redis_client)
    consumer = make_consumer(settings, redis_client, db, refresh)
    was_enabled = gc.isenabled()
    try:
        gc.enable()
        client.push("alice", 1, 4.0, timestamp=100)
        assert consumer.process_once() == 1
        assert gc.isenabled()

        gc.disable()
        client.push("alice", 2, 4.0, timestamp=100)
        assert consumer.process_once() == 1
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()


def test_pending_batch_split_at_committed_id(settings, redis_client, db, refresh, monkeypatch):
    client = RatingClient(redis_client)
    stream_ids = [client.push("alice", item, 4.0, timestamp=100) for item in range(4)]
    crash_before_commit(make_consumer(settings, redis_client, db, refresh), db, monkeypatch)
    assert pending_count(redis_client) == 4

    # Record the second entry as committed without writing the first two, so only the entries
    # after it can reach the database.
    db.apply_rating_columns(["bob"], ["9"], [1.0], [100], last_stream_id=stream_ids[1])
    drain(make_consumer(settings, redis_client, db, refresh))

    assert ratings_of(db, "alice") == {"2": 4.0, "3": 4.0}
    assert pending_count(redis_client) == 0
    assert db.current_seq() == 2
    assert "alice" in refresh.users()


def test_second_consumer_with_other_database_refused(settings, redis_client, db, refresh, tmp_path):
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    drain(make_consumer(settings, redis_client, db, refresh))
    other_settings = Settings(data_dir=tmp_path / "other", ingest_block_ms=0, redis_url=None)
    other_settings.data_dir.mkdir()

    with Database(other_settings.database_path) as other_db:
        other = make_consumer(other_settings, redis_client, other_db, refresh, name="ingest-2")
        with pytest.raises(ConsumerConflictError, match=f"with the database {settings.database_path.resolve()}"):
            other.process_once()
        assert other_db.ratings_arrays().nnz == 0

    # A consumer of the same database takes over, as after a restart.
    RatingClient(redis_client).push("bob", 2, 3.0, timestamp=100)
    drain(make_consumer(settings, redis_client, db, refresh))
    assert ratings_of(db, "bob") == {"2": 3.0}


def acknowledged_all(redis_client, n_events: int) -> bool:
    """Whether the ingest group has read at least n_events and has none unacknowledged."""
    groups = redis_client.xinfo_groups(EVENTS_STREAM)
    return bool(groups) and groups[0]["pending"] == 0 and int(groups[0].get("entries-read") or 0) >= n_events


def run_until_acknowledged(consumer: IngestConsumer, redis_client, n_events: int, timeout: float = 60) -> int:
    """Run the consumer's loop in a thread until the group has read and acknowledged n_events, or
    for `timeout` seconds. Stop it, and return how many entries were unacknowledged just before
    the stop, which flushes the batch in flight."""
    stop = threading.Event()
    worker = threading.Thread(target=consumer.run, kwargs={"stop_event": stop})
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if acknowledged_all(redis_client, n_events):
                break
            time.sleep(0.01)
        unacknowledged = pending_count(redis_client)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not worker.is_alive()
    return unacknowledged


def test_run_publishes_batches_in_order(settings, redis_client, db, refresh):
    client = RatingClient(redis_client)
    client.push_many(
        {"user_id": f"u{n % 30}", "item_id": n, "rating": 1.0 + n % 5, "timestamp": 100 + n}
        for n in range(450)
    )
    consumer = make_consumer(settings, redis_client, db, refresh)

    run_until_acknowledged(consumer, redis_client, 450)

    seqs = [seq for _, seq in refresh.calls]
    assert len(seqs) >= 5  # batches of at most 100
    assert seqs == sorted(seqs)
    assert set(refresh.users()) == {f"u{n}" for n in range(30)}
    assert sum(len(ratings_of(db, f"u{n}")) for n in range(30)) == 450
    assert pending_count(redis_client) == 0


def failing_once(refresh, failures: list[int]):
    """Wrap `refresh` so that its first call raises a Redis connection error, recording its seq."""

    def enqueue(user_ratings, seq):
        if not failures:
            failures.append(seq)
            raise redis.ConnectionError("connection reset while enqueueing")
        refresh(user_ratings, seq)

    return enqueue


def test_publisher_redis_error_loses_nothing(settings, redis_client, db, refresh, caplog):
    client = RatingClient(redis_client)
    client.push_many(
        {"user_id": f"u{n % 7}", "item_id": n, "rating": 3.0, "timestamp": 100} for n in range(250)
    )
    failures: list[int] = []
    fail_once = failing_once(refresh, failures)
    consumer = make_consumer(settings, redis_client, db, fail_once)
    with caplog.at_level(logging.WARNING, logger="ingest.consumer"):
        run_until_acknowledged(consumer, redis_client, 250)

    assert failures == [1]
    assert any(message.startswith("redis unavailable, retrying") for message in caplog.messages)
    # The failed batch's users were refreshed after it was read again as pending entries.
    assert set(refresh.users()) == {f"u{n}" for n in range(7)}
    assert sum(len(ratings_of(db, f"u{n}")) for n in range(7)) == 250
    assert pending_count(redis_client) == 0


def test_publisher_redis_error_retried_while_idle(settings, redis_client, db, refresh):
    # The only batch fails in the publishing thread, and no event follows it: the loop must
    # still read the batch again rather than leave it unacknowledged until the next one.
    RatingClient(redis_client).push_many(
        {"user_id": f"u{n % 7}", "item_id": n, "rating": 3.0, "timestamp": 100} for n in range(50)
    )
    failures: list[int] = []
    fail_once = failing_once(refresh, failures)
    consumer = make_consumer(settings, redis_client, db, fail_once)

    unacknowledged = run_until_acknowledged(consumer, redis_client, 50, timeout=10)

    assert failures == [1]
    assert unacknowledged == 0
    assert set(refresh.users()) == {f"u{n}" for n in range(7)}


def test_request_waits_for_batch_in_flight(settings, redis_client, db):
    # A refold request that arrives just before the consumer takes it from the list must still
    # wait for the batch in flight. Both enqueue at the same seq, so the later add wins, and a
    # batch entry relative to the snapshot before a rollback would replace the refold's entry.
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    release = threading.Event()
    calls: list[str] = []

    def enqueue(user_ratings, seq):
        if threading.current_thread() is threading.main_thread():
            calls.append(f"refold at seq {seq}")
        else:
            release.wait(timeout=10)
            calls.append(f"batch at seq {seq}")

    consumer = make_consumer(settings, redis_client, db, enqueue)
    real_lmove = consumer.connection.lmove

    def request_then_lmove(*args):
        if args[0] == EXPORT_REQUESTS and not calls:
            request_refold(redis_client, 0)  # arrives after any earlier look at the list
        return real_lmove(*args)

    consumer._publisher = ThreadPoolExecutor(max_workers=1)
    try:
        assert consumer.process_once() == 1  # the batch is in flight, its enqueue held back
        consumer.connection.lmove = request_then_lmove
        threading.Timer(0.3, release.set).start()
        consumer.process_once()
        consumer._wait_in_flight()
    finally:
        release.set()
        consumer._publisher.shutdown()
        consumer._publisher = None

    assert calls == ["batch at seq 1", "refold at seq 1"]


def test_request_requeued_when_wait_fails(settings, redis_client, db, refresh):
    request_refold(redis_client, 0)

    def fail():
        raise redis.ConnectionError("connection reset while enqueueing")

    with pytest.raises(redis.ConnectionError):
        serve_requests(redis_client, db, settings.exports_dir, refresh, before_serving=fail)

    assert redis_client.llen(EXPORT_REQUESTS) == 1
    assert redis_client.llen(EXPORT_REQUESTS_SERVING) == 0
    assert refresh.calls == []


def test_pending_entries_processed_once(settings, redis_client, db, refresh, caplog):
    # A consumer killed after reading a batch left its entries pending. Re-reading them must
    # not return the batch again while its acknowledgement is still in flight.
    RatingClient(redis_client).push_many(
        {"user_id": f"u{n % 7}", "item_id": n, "rating": 3.0, "timestamp": 100} for n in range(50)
    )
    redis_client.xgroup_create(EVENTS_STREAM, INGEST_GROUP, id="0")
    redis_client.xreadgroup(INGEST_GROUP, "ingest-1", {EVENTS_STREAM: ">"}, count=100)

    def slow_enqueue(user_ratings, seq):
        time.sleep(0.2)
        refresh(user_ratings, seq)

    consumer = make_consumer(settings, redis_client, db, slow_enqueue)
    with caplog.at_level(logging.INFO, logger="ingest.consumer"):
        run_until_acknowledged(consumer, redis_client, 50)

    recovered = [message for message in caplog.messages if "acknowledged after restart" in message]
    assert recovered == []
    assert len(refresh.calls) == 1
    assert sum(len(ratings_of(db, f"u{n}")) for n in range(7)) == 50


def test_stop_processes_entries_read_ahead(settings, redis_client, db, refresh):
    consumer = make_consumer(settings, redis_client, db, refresh)
    assert consumer.process_once() == 0  # nothing pending from an earlier run
    RatingClient(redis_client).push_many(
        {"user_id": f"u{n % 4}", "item_id": n, "rating": 2.0, "timestamp": 100} for n in range(30)
    )
    # As run() does after a batch of new entries: the next read goes out before processing.
    consumer._reader.send_ahead(100, block=None)
    stop = threading.Event()
    stop.set()

    consumer.run(stop_event=stop)

    assert sum(len(ratings_of(db, f"u{n}")) for n in range(4)) == 30
    assert pending_count(redis_client) == 0
    assert not consumer._reader.ahead


def test_read_ahead_connection_error_loses_nothing(settings, redis_client, db, refresh, monkeypatch, caplog):
    RatingClient(redis_client).push_many(
        {"user_id": f"u{n % 9}", "item_id": n, "rating": 4.0, "timestamp": 100} for n in range(450)
    )
    failures: list[int] = []
    receive = GroupReader._receive_ahead

    def fail_once(reader):
        if failures:
            return receive(reader)
        failures.append(1)
        reader.drop_ahead()  # the server's reply, with its entries, never arrives
        raise redis.ConnectionError("connection reset while reading ahead")

    monkeypatch.setattr(GroupReader, "_receive_ahead", fail_once)
    consumer = make_consumer(settings, redis_client, db, refresh)
    with caplog.at_level(logging.WARNING, logger="ingest.consumer"):
        unacknowledged = run_until_acknowledged(consumer, redis_client, 450)

    assert failures == [1]
    assert unacknowledged == 0
    assert any(message.startswith("redis unavailable, retrying") for message in caplog.messages)
    assert sum(len(ratings_of(db, f"u{n}")) for n in range(9)) == 450
    assert set(refresh.users()) == {f"u{n}" for n in range(9)}


def test_stream_deleted_during_blocked_read(settings, redis_client, db, refresh):
    consumer = make_consumer(settings, redis_client, db, refresh)
    assert consumer.process_once() == 0  # creates the group
    # A blocking read, as run() sends ahead after each batch. Redis 7.0.15 replies to it with an
    # UNBLOCKED error, not NOGROUP, when the stream is deleted meanwhile.
    consumer._reader.send_ahead(100, block=5000)
    deadline = time.monotonic() + 5
    while not any("b" in client["flags"] for client in redis_client.client_list()):
        assert time.monotonic() < deadline, "the read sent ahead never blocked"
        time.sleep(0.01)
    redis_client.delete(EVENTS_STREAM)

    assert consumer.process_once() == 0
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    assert drain(consumer) == 1
    assert ratings_of(db, "alice") == {"1": 4.0}


def test_request_stranded_by_outage_served_later(settings, redis_client, db, refresh, monkeypatch):
    # The wait before serving fails, and so does putting the request back: Redis is down. The
    # request is left in the serving list, and the running consumer must still serve it.
    RatingClient(redis_client).push("alice", 1, 4.0, timestamp=100)
    consumer = make_consumer(settings, redis_client, db, refresh)
    assert drain(consumer) == 1
    request_refold(redis_client, 0)
    real_lmove = consumer.connection.lmove
    failures: list[str] = []

    def lmove_failing_back(source, *args):
        if source == EXPORT_REQUESTS_SERVING and not failures:
            failures.append("back")
            raise redis.ConnectionError("connection refused while putting the request back")
        return real_lmove(source, *args)

    def wait_failing_once():
        if not failures:
            raise redis.ConnectionError("connection reset while waiting")

    monkeypatch.setattr(consumer.connection, "lmove", lmove_failing_back)
    monkeypatch.setattr(consumer, "_wait_in_flight", wait_failing_once)
    stop = threading.Event()
    loop = threading.Thread(target=consumer.run, kwargs={"stop_event": stop})
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while len(refresh.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        loop.join(timeout=30)

    assert failures == ["back"]
    assert redis_client.llen(EXPORT_REQUESTS_SERVING) == 0
    assert redis_client.llen(EXPORT_REQUESTS) == 0
    assert refresh.users() == ["alice", "alice"]  # the batch's refresh, then the refold's


def test_dead_letter_log_lines_limited(settings, redis_client, db, refresh, caplog):
    # One client sending thousands of bad events must not write a log line for each of them.
    settings = settings.model_copy(update={"ingest_batch_size": 100})
    with redis_client.pipeline(transaction=False) as pipe:
        for _ in range(3 * DEAD_LETTER_LOG_LIMIT):
            pipe.xadd(EVENTS_STREAM, {"user_id": "alice", "item_id": "2", "rating": "7"})
        pipe.execute()

    with caplog.at_level(logging.INFO, logger="ingest.consumer"):
        drain(make_consumer(settings, redis_client, db, refresh))

    assert redis_client.xlen(DEAD_LETTER_STREAM) == 3 * DEAD_LETTER_LOG_LIMIT
    per_event = [message for message in caplog.messages if message.startswith("event dead-lettered ")]
    assert len(per_event) == DEAD_LETTER_LOG_LIMIT
    summaries = [message for message in caplog.messages if message.startswith("events dead-lettered ")]
    assert summaries == [
        f"events dead-lettered count={3 * DEAD_LETTER_LOG_LIMIT} not_logged={2 * DEAD_LETTER_LOG_LIMIT}"
    ]


def test_dead_letter_keeps_binary_field_name(settings, redis_client, db, refresh):
    # A field name that is not UTF-8 once made the consumer raise UnicodeDecodeError while it
    # built the dead-letter entry, so the event stayed pending and stopped ingest at every start.
    redis_client.execute_command(
        "XADD", EVENTS_STREAM, "*", "user_id", "alice", "item_id", "2", "rating", "4", b"\xff", b"\xfe",
    )
    redis_client.xadd(EVENTS_STREAM, {"user_id": "bob", "item_id": "3", "rating": "2.5"})

    drain(make_consumer(settings, redis_client, db, refresh))

    raw_client = redis.Redis(connection_pool=redis_client.connection_pool)
    raw_client.set_response_callback("XRANGE", lambda response, **options: response)
    [(_, fields)] = raw_client.xrange(DEAD_LETTER_STREAM)
    assert fields[:8] == [b"user_id", b"alice", b"item_id", b"2", b"rating", b"4", b"\xff", b"\xfe"]
    assert fields[8] == b"reason"
    assert ratings_of(db, "bob") == {"3": 2.5}
    assert pending_count(redis_client) == 0
