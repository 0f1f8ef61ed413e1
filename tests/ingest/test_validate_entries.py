"""Bulk validation of stream entries agrees with validating each entry alone."""

import pytest

from ingest.events import event_from_entry, validate_entries
from store.errors import InvalidEventError

ENTRIES = [
    ("1000-0", {b"user_id": b"alice", b"item_id": b"7", b"rating": b"4.5", b"timestamp": b"100"}),
    ("2000-0", {b"user_id": b"bob", b"item_id": b"8", b"rating": b"7"}),
    ("3000-0", {b"user_id": b"carol", b"item_id": b"9", b"rating": b"3.0"}),
    ("4000-0", {b"user_id": b" ", b"item_id": b"9", b"rating": b"3.0"}),
    ("5000-0", {b"user_id": b"dave", b"item_id": b"9", b"rating": b"nan"}),
    ("6000-0", {b"user_id": b"erin", b"item_id": b"9", b"rating": b"2", b"timestamp": b""}),
    ("7000-0", {b"user_id": b"fred", b"item_id": b"9", b"rating": b"2", b"timestamp": b"-5"}),
    ("8000-0", {b"user_id": b"gina", b"rating": b"2"}),
    ("9000-0", {b"user_id": b"hal", b"item_id": b"9", b"rating": b" 2.5 ", b"timestamp": b" 12 "}),
    ("9500-0", {b"user_id": b"\xff", b"item_id": b"9", b"rating": b"2"}),
]


def test_valid_entries_become_columns_in_order():
    columns, _ = validate_entries(ENTRIES)
    assert columns.positions == [0, 2, 8]
    assert columns.user_ids == ["alice", "carol", "hal"]
    assert columns.ratings == [4.5, 3.0, 2.5]
    # A missing timestamp is the entry id's time in whole seconds.
    assert columns.timestamps == [100, 3, 12]


@pytest.mark.parametrize("position", [1, 3, 4, 5, 6, 7, 9])
def test_invalid_entry_has_the_single_entry_reason(position):
    _, invalid = validate_entries(ENTRIES)
    reasons = dict(invalid)
    stream_id, fields = ENTRIES[position]
    with pytest.raises(InvalidEventError) as expected:
        event_from_entry(stream_id, fields)
    assert reasons[position] == str(expected.value)


def test_rating_reason_names_field_and_value():
    _, invalid = validate_entries(ENTRIES)
    assert dict(invalid)[1] == "rating: must be between 0.5 and 5.0, got 7"
