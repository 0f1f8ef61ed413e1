"""The client's direct check of plain events agrees with the full event model."""

import re
from itertools import chain

import pytest

from ingest.client import RatingClient
from ingest.events import RatingEvent, validate_event
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


# Events next to each rule the column check applies; all valid.
COLUMN_EDGES = [
    {"user_id": "a", "item_id": "b", "rating": 0.5, "timestamp": 0},
    {"user_id": "~" * 256, "item_id": "!", "rating": 5, "timestamp": 1},
    {"user_id": "é", "item_id": "b", "rating": 1.0, "timestamp": 2},
    {"user_id": "a b", "item_id": "b", "rating": 1.0, "timestamp": 3},
    {"user_id": 5, "item_id": "b", "rating": 1.0, "timestamp": 4},
    {"user_id": "a", "item_id": "b", "rating": 1.0},
    {"user_id": "a", "item_id": "b", "rating": 1.0, "timestamp": None, "event_id": None},
    {"user_id": "a", "item_id": "b", "rating": 1.0, "timestamp": 5, "event_id": "e"},
    {"user_id": "a", "item_id": "b", "rating": "2.5", "timestamp": 6},
    {"user_id": "a", "item_id": "b", "rating": 2.5, "timestamp": "7"},
    {"user_id": "a", "item_id": "b", "rating": 2.5, "timestamp": 8.0},
    RatingEvent(user_id="a", item_id="b", rating=2.0, timestamp=9),
]


def _single_commands(client, events):
    return [("XADD", client.stream, "*", *chain.from_iterable(client._fields(e).items())) for e in events]


@pytest.mark.parametrize("first", range(len(COLUMN_EDGES)))
def test_column_commands_match_single_events(first):
    # Each event in turn leads, since the first event's timestamp sets the column layout.
    events = COLUMN_EDGES[first:] + COLUMN_EDGES[:first]
    client = RatingClient(connection=None)
    assert client._xadd_commands(events) == _single_commands(client, events)


def test_column_commands_match_in_one_layout():
    events = [{"user_id": str(n), "item_id": "i", "rating": 0.5 * (n % 10 + 1), "timestamp": n} for n in range(50)]
    client = RatingClient(connection=None)
    assert client._xadd_commands(events) == _single_commands(client, events)


@pytest.mark.parametrize(
    "bad",
    INVALID
    + [
        {"user_id": "a", "item_id": "b", "rating": 10**400, "timestamp": 1},
        {"user_id": "a", "item_id": "b", "rating": 2.0, "timestamp": 2**64},
        {"user_id": "a", "item_id": "b", "rating": 2.0, "timestamp": 10**12},
        {"user_id": "a", "item_id": "b" * 257, "rating": 2.0, "timestamp": 1},
        {"user_id": "a\x00", "item_id": "b", "rating": 2.0, "timestamp": 1},
    ],
)
def test_column_check_raises_the_model_message(bad):
    events = [{"user_id": "ok", "item_id": "1", "rating": 3.0, "timestamp": 1}] * 5 + [bad]
    with pytest.raises(InvalidEventError) as expected:
        validate_event(bad)
    with pytest.raises(InvalidEventError) as raised:
        RatingClient(connection=None)._xadd_commands(events)
    assert str(raised.value) == f"events[5]: {expected.value}"


@pytest.mark.parametrize("events, message", [
    ("abc", "events: must be a list of events, got str"),
    ([{"user_id": "u", "item_id": "1", "rating": 3.0}, ("950", "1", 4.0)],
     "events[1]: must be a RatingEvent or a mapping of fields, got tuple"),
])
def test_push_many_names_the_bad_event(events, message):
    with pytest.raises(InvalidEventError, match=re.escape(message)):
        RatingClient(connection=None).push_many(events)
