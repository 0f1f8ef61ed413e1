"""Trimming of the events stream against a real Redis: only old entries every group is done with."""

from __future__ import annotations

import pytest
import redis

from ingest.trim import trim_events

pytestmark = pytest.mark.redis

STREAM = "test:events"


def ids(connection: redis.Redis) -> list[str]:
    return [entry_id.decode() for entry_id, _ in connection.xrange(STREAM)]


def add_entries(connection: redis.Redis, milliseconds: list[int]) -> None:
    for value in milliseconds:
        connection.xadd(STREAM, {"n": value}, id=f"{value}-0")


def test_trim_keeps_pending_and_undelivered(redis_client):
    add_entries(redis_client, [1000, 2000, 3000, 4000, 5000, 6000])
    redis_client.xgroup_create(STREAM, "ingest", id="0")
    delivered = redis_client.xreadgroup("ingest", "c1", {STREAM: ">"}, count=4)[0][1]
    # 1000, 2000 and 4000 acknowledged; 3000 still pending; 5000 and 6000 not yet delivered.
    redis_client.xack(STREAM, "ingest", delivered[0][0], delivered[1][0], delivered[3][0])

    trimmed = trim_events(redis_client, STREAM, 0.0, now_ms=10_000, group="ingest")

    assert trimmed == 2
    assert ids(redis_client) == ["3000-0", "4000-0", "5000-0", "6000-0"]


def test_trim_keeps_entries_younger_than_keep_seconds(redis_client):
    add_entries(redis_client, [1000, 2000, 3000])
    redis_client.xgroup_create(STREAM, "ingest", id="0")
    delivered = redis_client.xreadgroup("ingest", "c1", {STREAM: ">"})[0][1]
    redis_client.xack(STREAM, "ingest", *[entry_id for entry_id, _ in delivered])

    trimmed = trim_events(redis_client, STREAM, 1.5, now_ms=3600, group="ingest")

    assert trimmed == 2
    assert ids(redis_client) == ["3000-0"]


def test_trim_waits_for_the_slowest_group(redis_client):
    add_entries(redis_client, [1000, 2000, 3000])
    redis_client.xgroup_create(STREAM, "ingest", id="0")
    redis_client.xgroup_create(STREAM, "analytics", id="0")
    delivered = redis_client.xreadgroup("ingest", "c1", {STREAM: ">"})[0][1]
    redis_client.xack(STREAM, "ingest", *[entry_id for entry_id, _ in delivered])
    redis_client.xreadgroup("analytics", "c1", {STREAM: ">"}, count=1)

    trim_events(redis_client, STREAM, 0.0, now_ms=10_000, group="ingest")

    assert ids(redis_client) == ["1000-0", "2000-0", "3000-0"]


def test_trim_leaves_a_stream_without_groups(redis_client):
    add_entries(redis_client, [1000, 2000])

    assert trim_events(redis_client, STREAM, 0.0, now_ms=10_000, group="ingest") == 0
    assert ids(redis_client) == ["1000-0", "2000-0"]


def test_trim_of_a_missing_stream_is_nothing(redis_client):
    assert trim_events(redis_client, STREAM, 0.0, now_ms=10_000, group="ingest") == 0


def test_trim_waits_for_the_readers_own_group(redis_client):
    # The stream was deleted and created again by a producer, so only another app's group
    # exists until the ingest consumer creates its own, and none of the entries is stored.
    add_entries(redis_client, [1000, 2000])
    redis_client.xgroup_create(STREAM, "analytics", id="0")
    delivered = redis_client.xreadgroup("analytics", "c1", {STREAM: ">"})[0][1]
    redis_client.xack(STREAM, "analytics", *[entry_id for entry_id, _ in delivered])

    assert trim_events(redis_client, STREAM, 0.0, now_ms=10_000, group="ingest") == 0
    assert ids(redis_client) == ["1000-0", "2000-0"]


class AckAfterGroupInfo:
    """A connection on which another consumer acknowledges every pending entry right after
    XINFO GROUPS, so XPENDING then finds none although XINFO GROUPS counted some."""

    def __init__(self, connection: redis.Redis) -> None:
        self._connection = connection

    def __getattr__(self, name: str):
        return getattr(self._connection, name)

    def xinfo_groups(self, stream: str):
        groups = self._connection.xinfo_groups(stream)
        for group in groups:
            pending = self._connection.xpending_range(stream, group["name"], "-", "+", 1000)
            if pending:
                self._connection.xack(stream, group["name"], *[row["message_id"] for row in pending])
        return groups


def test_trim_with_pending_acknowledged_meanwhile(redis_client):
    add_entries(redis_client, [1000, 2000, 3000])
    redis_client.xgroup_create(STREAM, "ingest", id="0")
    redis_client.xreadgroup("ingest", "c1", {STREAM: ">"}, count=2)

    trimmed = trim_events(AckAfterGroupInfo(redis_client), STREAM, 0.0, now_ms=10_000, group="ingest")

    assert trimmed == 2
    assert ids(redis_client) == ["3000-0"]
