"""ingest.client against the real Redis test database."""

from __future__ import annotations

import random

import hiredis
import pytest
import redis

from ingest.client import RatingClient, xadd_payload
from ingest.events import RatingEvent
from store.errors import InvalidEventError
from store.keys import EVENTS_STREAM

pytestmark = pytest.mark.redis


def entries(connection: redis.Redis) -> list[tuple[str, dict[str, str]]]:
    return [
        (stream_id.decode(), {key.decode(): value.decode() for key, value in fields.items()})
        for stream_id, fields in connection.xrange(EVENTS_STREAM)
    ]


def test_push_sends_fields(redis_client: redis.Redis):
    stream_id = RatingClient(redis_client).push("alice", 42, 4.5, timestamp=1000, event_id="e1")

    assert entries(redis_client) == [
        (stream_id, {"user_id": "alice", "item_id": "42", "rating": "4.5", "timestamp": "1000", "event_id": "e1"})
    ]


def test_push_leaves_out_absent_fields(redis_client: redis.Redis):
    RatingClient(redis_client).push(1, 2, 3)
    assert entries(redis_client)[0][1] == {"user_id": "1", "item_id": "2", "rating": "3.0"}


def test_push_invalid_sends_nothing(redis_client: redis.Redis):
    with pytest.raises(InvalidEventError, match="rating: must be between 0.5 and 5.0, got 7"):
        RatingClient(redis_client).push("alice", 42, 7)
    assert redis_client.xlen(EVENTS_STREAM) == 0


def test_push_many_in_order(redis_client: redis.Redis):
    events = [RatingEvent(user_id="u", item_id=str(n), rating=3.0, timestamp=n) for n in range(2500)]
    stream_ids = RatingClient(redis_client).push_many(events)

    stored = entries(redis_client)
    assert len(stream_ids) == 2500
    assert [stream_id for stream_id, _ in stored] == stream_ids
    assert [fields["item_id"] for _, fields in stored] == [str(n) for n in range(2500)]


def test_push_many_all_or_nothing(redis_client: redis.Redis):
    events = [{"user_id": "u", "item_id": "1", "rating": 3}, {"user_id": "u", "item_id": "", "rating": 3}]
    with pytest.raises(InvalidEventError, match="item_id: must not be empty"):
        RatingClient(redis_client).push_many(events)
    assert redis_client.xlen(EVENTS_STREAM) == 0


def test_client_scale(redis_client: redis.Redis):
    client = RatingClient(redis_client, rating_min=1, rating_max=10)
    client.push("u", "i", 10)
    with pytest.raises(InvalidEventError, match="between 1.0 and 10.0"):
        client.push("u", "i", 0.5)


def test_push_many_fields_match_push(redis_client: redis.Redis):
    events = [
        {"user_id": "alice", "item_id": 7, "rating": 4.5},
        {"user_id": 12, "item_id": "x y", "rating": 3, "timestamp": 100, "event_id": "e-1"},
        {"user_id": "é", "item_id": "9", "rating": "0.5", "timestamp": "0", "extra": "ignored"},
        RatingEvent(user_id="bob", item_id="8", rating=2.0, timestamp=5),
    ]
    client = RatingClient(redis_client)
    many_ids = client.push_many(events)
    single_ids = [client.push(**RatingClient(None)._validate(event).model_dump()) for event in events]

    stored = dict(entries(redis_client))
    assert [stored[stream_id] for stream_id in many_ids] == [stored[stream_id] for stream_id in single_ids]


def test_push_many_error_reply_leaves_connection_usable(redis_client: redis.Redis):
    redis_client.set(EVENTS_STREAM, "not a stream")
    client = RatingClient(redis_client)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.push_many([{"user_id": "u", "item_id": str(n), "rating": 3.0} for n in range(3)])

    # No reply of the failed chunk may be read as the reply to a later command.
    redis_client.delete(EVENTS_STREAM)
    assert redis_client.ping() is True
    stream_ids = client.push_many([{"user_id": "u", "item_id": "1", "rating": 3.0}])
    assert [stream_id for stream_id, _ in entries(redis_client)] == stream_ids


def test_push_many_empty_sends_nothing(redis_client: redis.Redis):
    assert RatingClient(redis_client).push_many([]) == []
    assert not redis_client.exists(EVENTS_STREAM)


def test_push_many_without_hiredis_packing(redis_client: redis.Redis, monkeypatch):
    # hiredis before 2.2.1 has no pack_command; redis-py then packs the same commands.
    monkeypatch.setattr("ingest.packed._PACK_COMMAND", None)
    events = [{"user_id": "u", "item_id": str(n), "rating": 3.0, "timestamp": n} for n in range(3)]
    # An event_id takes an event off the column path, so the commands go through packing.
    events[1]["event_id"] = "e-1"
    stream_ids = RatingClient(redis_client).push_many(events)

    stored = entries(redis_client)
    assert [stream_id for stream_id, _ in stored] == stream_ids
    assert [fields["item_id"] for _, fields in stored] == ["0", "1", "2"]
    assert stored[1][1]["event_id"] == "e-1"


@pytest.mark.parametrize("stream", [EVENTS_STREAM, "ström %d:events"])
@pytest.mark.parametrize("with_timestamp", [True, False])
def test_xadd_payload_matches_hiredis(stream: str, with_timestamp: bool):
    rng = random.Random(7)
    columns = [
        [f"u{rng.randrange(10**rng.randrange(1, 9))}" for _ in range(200)],
        ["".join(rng.choice("ab%c:!~") for _ in range(rng.randrange(1, 12))) for _ in range(200)],
        [repr(rng.randrange(1, 11) / 2) for _ in range(200)],
    ]
    if with_timestamp:
        columns.append([str(rng.randrange(0, 2**40)) for _ in range(200)])
    names = ["user_id", "item_id", "rating", "timestamp"][: len(columns)]
    expected = b"".join(
        hiredis.pack_command(("XADD", stream, "*", *[part for pair in zip(names, row) for part in pair]))
        for row in zip(*columns)
    )

    assert xadd_payload(stream, columns) == expected


def test_push_many_to_named_stream(redis_client: redis.Redis):
    stream = "ström %d:events"
    events = [{"user_id": f"u{n}", "item_id": "7", "rating": 2.5, "timestamp": 10 + n} for n in range(5)]

    stream_ids = RatingClient(redis_client, stream=stream).push_many(events)

    stored = redis_client.xrange(stream)
    assert [stream_id.decode() for stream_id, _ in stored] == stream_ids
    assert stored[4][1] == {b"user_id": b"u4", b"item_id": b"7", b"rating": b"2.5", b"timestamp": b"14"}
