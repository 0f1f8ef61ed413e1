"""Ids and timestamps that would corrupt snapshots or pin a rating forever are rejected."""

from __future__ import annotations

import time

import pytest

from ingest.entries import validate_entries
from ingest.events import MAX_FUTURE_SECONDS, MAX_ID_LENGTH, validate_event
from store.errors import InvalidEventError

REJECTED = [
    ({"user_id": "m1\x00", "item_id": "1", "rating": 3}, "user_id: must not contain control characters"),
    ({"user_id": "u", "item_id": "a\nb", "rating": 3}, "item_id: must not contain control characters"),
    ({"user_id": "\ud800", "item_id": "1", "rating": 3}, "user_id: must not contain control characters or surrogates"),
    ({"user_id": "h" * (MAX_ID_LENGTH + 1), "item_id": "1", "rating": 3}, "user_id: must be at most 256 characters"),
    ({"user_id": "u", "item_id": "1", "rating": 3, "timestamp": 10**20}, "timestamp: must not be more than"),
    ({"user_id": "u", "item_id": "1", "rating": 3, "timestamp": 2**63 - 1}, "timestamp: must not be more than"),
    ({"user_id": "u", "item_id": "1", "rating": "4_0"}, "rating: must be a number, got 4_0"),
]


@pytest.mark.parametrize(("fields", "reason"), REJECTED)
def test_invalid_event_rejected(fields, reason):
    with pytest.raises(InvalidEventError) as info:
        validate_event(fields)
    assert str(info.value).startswith(reason)
    str(info.value).encode("utf-8")  # the reason must be storable in the dead-letter stream


@pytest.mark.parametrize(("fields", "reason"), [case for case in REJECTED if "\ud800" not in case[0]["user_id"]])
def test_bulk_path_gives_same_reason(fields, reason):
    entry = {key.encode(): str(value).encode() for key, value in fields.items()}
    columns, invalid = validate_entries([("1-0", entry)])
    assert len(columns) == 0
    assert invalid[0][1].startswith(reason)


def test_accepted_limits():
    now = int(time.time())
    event = validate_event({"user_id": "é" * MAX_ID_LENGTH, "item_id": "7789", "rating": 4.5,
                            "timestamp": now + MAX_FUTURE_SECONDS - 60})
    assert len(event.user_id) == MAX_ID_LENGTH
    columns, invalid = validate_entries([("1-0", {b"user_id": "é".encode(), b"item_id": b"1",
                                                  b"rating": b"4.5", b"timestamp": str(now).encode()})])
    assert invalid == []
    assert columns.timestamps.tolist() == [now]


@pytest.mark.parametrize(
    "bad",
    [
        {"user_id": "u\x00x", "item_id": "1", "rating": 4.0},
        {"user_id": "u" * (MAX_ID_LENGTH + 1), "item_id": "1", "rating": 4.0},
        {"user_id": "u", "item_id": "1", "rating": 4.0, "timestamp": 2**64},
        {"user_id": "u", "item_id": "1", "rating": 4.0, "event_id": "e\x00"},
        {"user_id": "u\ud800", "item_id": "1", "rating": 4.0},
        {"user_id": " 1", "item_id": "1", "rating": 4.0},
    ],
)
def test_push_many_sends_nothing_when_one_invalid(redis_client, bad):
    from ingest.client import RatingClient
    from store import keys

    client = RatingClient(redis_client)
    with pytest.raises(InvalidEventError):
        client.push_many([{"user_id": "ok", "item_id": "1", "rating": 3.0}] * 1200 + [bad])
    assert not redis_client.exists(keys.EVENTS_STREAM)


@pytest.mark.parametrize("field, value", [("rating", "٣"), ("timestamp", "١٧٠٠٠٠٠٠٠٠"), ("timestamp", "1_000")])
def test_non_ascii_or_underscored_numbers_rejected(field, value):
    fields = {"user_id": "u", "item_id": "1", "rating": "3", field: value}
    with pytest.raises(InvalidEventError, match=f"^{field}: must be"):
        validate_event(fields)
