"""ingest.events: validation messages and stream-entry parsing."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.events import (
    RatingEvent,
    event_from_entry,
    stream_id_key,
    validate_event,
)
from store.errors import InvalidEventError


def test_integer_ids_become_strings():
    event = validate_event({"user_id": 7, "item_id": np.int64(42), "rating": 4.5})
    assert event.user_id == "7"
    assert event.item_id == "42"
    assert event.timestamp is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"user_id": "u", "item_id": "i", "rating": 7}, "rating: must be between 0.5 and 5.0, got 7"),
        ({"user_id": "u", "item_id": "i", "rating": "7"}, "rating: must be between 0.5 and 5.0, got 7"),
        ({"user_id": "u", "item_id": "i", "rating": 0.25}, "rating: must be between 0.5 and 5.0, got 0.25"),
        ({"user_id": "u", "item_id": "i", "rating": "nan"}, "rating: must be a finite number, got nan"),
        ({"user_id": "u", "item_id": "i", "rating": float("inf")}, "rating: must be a finite number, got inf"),
        ({"user_id": "u", "item_id": "i", "rating": "good"}, "rating: must be a number, got good"),
        ({"user_id": "u", "item_id": "i", "rating": True}, "rating: must be a number, got True"),
        ({"user_id": "", "item_id": "i", "rating": 3}, "user_id: must not be empty, got ''"),
        ({"user_id": "  ", "item_id": "i", "rating": 3}, "user_id: must not be empty, got '  '"),
        ({"user_id": 1.5, "item_id": "i", "rating": 3}, "user_id: must be a string or an integer, got 1.5"),
        ({"item_id": "i", "rating": 3}, "user_id: missing"),
        (
            {"user_id": "u", "item_id": "i", "rating": 3, "timestamp": -1},
            "timestamp: must be >= 0 (seconds since the epoch), got -1",
        ),
        (
            {"user_id": "u", "item_id": "i", "rating": 3, "timestamp": "soon"},
            "timestamp: must be an integer (seconds since the epoch), got soon",
        ),
    ],
)
def test_invalid_event_message(data, message):
    with pytest.raises(InvalidEventError) as caught:
        validate_event(data)
    assert str(caught.value) == message


def test_several_errors_listed():
    with pytest.raises(InvalidEventError) as caught:
        validate_event({"user_id": "", "rating": 9})
    assert str(caught.value) == (
        "user_id: must not be empty, got ''; item_id: missing; rating: must be between 0.5 and 5.0, got 9"
    )


def test_scale_from_arguments():
    assert validate_event({"user_id": "u", "item_id": "i", "rating": 10}, 1, 10).rating == 10.0
    with pytest.raises(InvalidEventError, match="rating: must be between 1.0 and 10.0, got 0.5"):
        validate_event({"user_id": "u", "item_id": "i", "rating": 0.5}, 1, 10)


def test_direct_construction_validates():
    with pytest.raises(ValueError):
        RatingEvent(user_id="u", item_id="i", rating=6.0)


def test_fields_round_trip():
    event = RatingEvent(user_id="u", item_id=3, rating=4.5, timestamp=10, event_id="e-1")
    assert event.to_fields() == {
        "user_id": "u",
        "item_id": "3",
        "rating": "4.5",
        "timestamp": "10",
        "event_id": "e-1",
    }
    assert validate_event(event.to_fields()) == event


def test_entry_without_timestamp_uses_stream_id():
    fields = {b"user_id": b"u", b"item_id": b"9", b"rating": b"4.5"}
    first = event_from_entry("1700000000999-3", fields)
    again = event_from_entry("1700000000999-3", fields)
    assert first.timestamp == 1700000000
    assert again == first


def test_entry_timestamp_kept():
    event = event_from_entry("1700000000999-3", {"user_id": "u", "item_id": "9", "rating": "4", "timestamp": "5"})
    assert event.timestamp == 5


def test_entry_invalid_utf8():
    with pytest.raises(InvalidEventError, match="user_id: not valid UTF-8"):
        event_from_entry("1-0", {b"user_id": b"\xff\xfe", b"item_id": b"9", b"rating": b"4"})


def test_entry_extra_fields_ignored():
    event = event_from_entry("1-0", {"user_id": "u", "item_id": "9", "rating": "4", "source": "app"})
    assert event.user_id == "u"


def test_stream_id_order():
    assert stream_id_key("10-2") < stream_id_key("10-10")
    assert stream_id_key("9-99") < stream_id_key("10-0")
