"""ingest.group_reader: reads of the events stream, with one read sent ahead, on real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from ingest.group_reader import GroupReader

pytestmark = pytest.mark.redis

STREAM = "test:events"
GROUP = "test-group"


@pytest.fixture
def reader(redis_client: redis.Redis) -> GroupReader:
    redis_client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    return GroupReader(redis_client, STREAM, GROUP, "reader-1")


def add(redis_client: redis.Redis, count: int, start: int = 0) -> list[bytes]:
    return [redis_client.xadd(STREAM, {"n": str(n)}) for n in range(start, start + count)]


def pending_ids(redis_client: redis.Redis) -> list[bytes]:
    return [entry["message_id"] for entry in redis_client.xpending_range(STREAM, GROUP, "-", "+", 1000)]


def test_read_returns_entries_unparsed(redis_client, reader):
    ids = add(redis_client, 3)

    entries = reader.read(">", 10, block=None)

    assert [list(entry) for entry in entries] == [[ids[n], [b"n", str(n).encode()]] for n in range(3)]
    assert reader.read(">", 10, block=None) == []
    assert [stream_id for stream_id, _ in reader.read("0", 10, block=None)] == ids


def test_read_ahead_returned_by_next_read(redis_client, reader):
    first = add(redis_client, 2)
    assert [stream_id for stream_id, _ in reader.read(">", 2, block=None)] == first
    later = add(redis_client, 3, start=2)

    reader.send_ahead(2, block=None)
    add(redis_client, 1, start=5)  # after the read was sent: not part of its reply

    assert reader.ahead
    assert [stream_id for stream_id, _ in reader.read(">", 2, block=None)] == later[:2]
    assert not reader.ahead
    assert [stream_id for stream_id, _ in reader.read(">", 10, block=None)][0] == later[2]


def test_read_ahead_waits_for_entries_when_blocking(redis_client, reader):
    reader.send_ahead(10, block=2000)
    ids = add(redis_client, 1)

    assert [stream_id for stream_id, _ in reader.read(">", 10, block=2000)] == ids


def test_read_of_pending_entries_includes_entries_read_ahead(redis_client, reader):
    ids = add(redis_client, 4)
    reader.read(">", 1, block=None)
    reader.send_ahead(2, block=None)

    entries = reader.read("0", 10, block=None)

    assert [stream_id for stream_id, _ in entries] == ids[:3]
    assert not reader.ahead


def test_dropped_read_ahead_leaves_its_entries_pending(redis_client, reader):
    ids = add(redis_client, 3)
    reader.send_ahead(10, block=None)
    # Wait until the server has replied to the read, as it does long before a batch is processed.
    deadline = time.monotonic() + 5
    while not pending_ids(redis_client) and time.monotonic() < deadline:
        time.sleep(0.01)

    reader.drop_ahead()

    assert pending_ids(redis_client) == ids
    assert not reader.ahead
    assert [stream_id for stream_id, _ in reader.read("0", 10, block=None)] == ids


def test_second_read_ahead_is_refused(redis_client, reader):
    reader.send_ahead(10, block=None)

    with pytest.raises(RuntimeError, match="not received yet"):
        reader.send_ahead(10, block=None)
    reader.drop_ahead()


def test_read_ahead_error_returns_connection(redis_client, reader):
    pool = redis_client.connection_pool
    reader.send_ahead(10, block=None)
    redis_client.delete(STREAM)  # the group goes with the stream
    # The read was sent before the delete, so its reply may hold entries or the error. The next
    # read fails for the missing group either way.
    try:
        reader.read(">", 10, block=None)
    except redis.ResponseError as exc:
        assert "NOGROUP" in str(exc)
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        reader.read(">", 10, block=None)

    assert not reader.ahead
    assert len(pool._in_use_connections) == 0
