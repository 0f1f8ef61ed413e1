"""The client's direct check of plain events agrees with the full event model."""

import pytest

from ingest.client import RatingClient
from ingest.events import validate_event
from store.errors import InvalidEventError

PLAIN = [
    {"user_id": "alice", "item_id": 7, "rating": 4.5},
    {"user_id": 12, "item_id": "x y", "rating": 3, "timestamp": 100, "event_id": "e-1"},
    {"user_id": "bob", "item_id": "9", "rating": 0.5, "timestamp": 0, "extra": "ignored"},
]
OTHER = [
    {"user_id": "alice", "item_id": 7, "rating": "4.5", "timestamp": "100"},
    {"user_id": "alice", "item_id": 7, "rating": 4.5, "timestamp": 100.0},
]
INVALID = [
    {"user_id": " ", "item_id": 7, "rating": 4.5},
    {"user_id": "alice", "item_id": 7, "rating": 7},
    {"user_id": "alice", "item_id": 7, "rating": float("nan")},
    {"user_id": "alice", "item_id": 7, "rating": 4.0, "timestamp": -1},
    {"user_id": True, "item_id": 7, "rating": 4.0},
    {"item_id": 7, "rating": 4.0},
]


@pytest.mark.parametrize("event", PLAIN + OTHER)
def test_fields_match_the_model(event):
    client = RatingClient(connection=None)
    assert client._fields(event) == validate_event(event).to_fields()


@pytest.mark.parametrize("event", INVALID)
def test_invalid_event_raises_the_model_message(event):
    client = RatingClient(connection=None)
    with pytest.raises(InvalidEventError) as expected:
        validate_event(event)
    with pytest.raises(InvalidEventError) as raised:
        client._fields(event)
    assert str(raised.value) == str(expected.value)
