"""Bulk validation of stream entries agrees with validating each entry alone."""

import pytest

from ingest.entries import validate_entries
from ingest.events import event_from_entry
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
    assert columns.positions.tolist() == [0, 2, 8]
    assert columns.user_ids.tolist() == ["alice", "carol", "hal"]
    assert columns.ratings.tolist() == [4.5, 3.0, 2.5]
    # A missing timestamp is the entry id's time in whole seconds.
    assert columns.timestamps.tolist() == [100, 3, 12]


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


def _single_results(entries):
    """Validate each entry alone: a list of (user_id, item_id, rating, timestamp) or the reason."""
    results = []
    for stream_id, fields in entries:
        mapping = fields if isinstance(fields, dict) else dict(zip(fields[0::2], fields[1::2]))
        try:
            event = event_from_entry(stream_id, mapping)
        except InvalidEventError as exc:
            results.append(str(exc))
            continue
        results.append((event.user_id, event.item_id, event.rating, event.timestamp))
    return results


def _bulk_results(entries):
    columns, invalid = validate_entries(entries)
    results: list = [None] * len(entries)
    for position, reason in invalid:
        results[position] = reason
    for row, position in enumerate(columns.positions.tolist()):
        results[position] = (
            columns.user_ids[row],
            columns.item_ids[row],
            float(columns.ratings[row]),
            int(columns.timestamps[row]),
        )
    return results


def _entry(user_id=b"u", item_id=b"7", rating=b"4.5", timestamp=b"100"):
    fields = [b"user_id", user_id, b"item_id", item_id, b"rating", rating]
    if timestamp is not None:
        fields += [b"timestamp", timestamp]
    return fields


# Values next to each rule the column checks apply, in the flat form Redis replies have.
EDGE_FIELDS = [
    _entry(),
    _entry(timestamp=None),
    _entry(rating=b"4."),
    _entry(rating=b".5"),
    _entry(rating=b"005.0"),
    _entry(rating=b"5.0000"),
    _entry(rating=b"5.01"),
    _entry(rating=b"0.4"),
    _entry(rating=b"1.2.3"),
    _entry(rating=b"."),
    _entry(rating=b""),
    _entry(rating=b"1e0"),
    _entry(rating=b"+3"),
    _entry(rating=b"-1"),
    _entry(rating=b"inf"),
    _entry(rating=b"4_0"),
    _entry(rating="٣".encode()),
    _entry(rating=b"3" * 40),
    _entry(timestamp=b"0012"),
    _entry(timestamp=b"0"),
    _entry(timestamp=b""),
    _entry(timestamp=b" 12"),
    _entry(timestamp=b"1.5"),
    _entry(timestamp=b"-5"),
    _entry(timestamp=b"9" * 19),
    _entry(timestamp=b"9" * 40),
    _entry(user_id=b"a b"),
    _entry(user_id=b" a"),
    _entry(user_id=b""),
    _entry(user_id=b"~!"),
    _entry(user_id=b"\x7f"),
    _entry(user_id=b"a\x00"),
    _entry(user_id=b"\xff"),
    _entry(user_id="é".encode()),
    _entry(item_id=b"x" * 256),
    _entry(item_id=b"x" * 257),
    _entry(item_id="é".encode() * 256),
    [b"user_id", b"u", b"item_id", b"7", b"rating", b"4.5", b"event_id", b"e1"],
    [b"item_id", b"7", b"user_id", b"u", b"rating", b"4.5"],
    [b"user_id", b"u", b"item_id", b"7", b"rating", b"4.5", b"timestamp", b"100", b"extra", b"x"],
    [b"user_id", b"u", b"rating", b"4.5"],
]


def test_column_checks_agree_with_single_entries():
    entries = [(f"{1000 + position}-0", fields) for position, fields in enumerate(EDGE_FIELDS)]
    assert _bulk_results(entries) == _single_results(entries)


def test_each_edge_value_alone_agrees():
    # Alone, each entry sets the column widths itself, so padding and cutting differ.
    for position, fields in enumerate(EDGE_FIELDS):
        entries = [(f"{1000 + position}-0", fields)]
        assert _bulk_results(entries) == _single_results(entries), fields


def test_flat_and_mapping_fields_agree():
    flat = [(stream_id, [part for pair in fields.items() for part in pair]) for stream_id, fields in ENTRIES]
    assert _bulk_results(flat) == _bulk_results(ENTRIES)


def test_text_fields_validated():
    entries = [
        ("1000-0", ["user_id", "alice", "item_id", "7", "rating", "4.5", "timestamp", "100"]),
        ("2000-0", ["user_id", "bob", "item_id", "8", "rating", "9", "timestamp", "100"]),
    ]
    assert _bulk_results(entries) == [("alice", "7", 4.5, 100), "rating: must be between 0.5 and 5.0, got 9"]


def test_far_future_timestamp_rejected_in_bulk():
    import time

    from ingest.events import MAX_FUTURE_SECONDS

    limit = int(time.time()) + MAX_FUTURE_SECONDS
    entries = [
        ("1000-0", _entry(timestamp=str(limit - 60).encode())),
        ("1001-0", _entry(timestamp=str(limit + 60).encode())),
    ]
    results = _bulk_results(entries)
    assert results[0] == ("u", "7", 4.5, limit - 60)
    assert results[1].startswith("timestamp: must not be more than")


def test_missing_timestamp_from_bytes_stream_id():
    columns, invalid = validate_entries([(b"1700000000999-3", _entry(timestamp=None))])
    assert invalid == []
    assert columns.timestamps.tolist() == [1_700_000_000]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            [b"user_id", b"1", b"item_id", b"7", b"rating", b"3", b"user_id", b"2"],
            "user_id: given 2 times, got '1' and '2'",
        ),
        (
            [b"user_id", b"1", b"item_id", b"7", b"rating", b"3", b"rating", b"5"],
            "rating: given 2 times, got '3' and '5'",
        ),
        (
            [b"user_id", b"u", b"item_id", b"7", b"rating", b"4.5", b"rating", b"9"],
            "rating: given 2 times, got '4.5' and '9'",
        ),
        (
            [b"user_id", b"1", b"item_id", b"7", b"item_id", b"7", b"rating", b"3", b"timestamp", b"9"],
            "item_id: given 2 times, got '7' and '7'",
        ),
    ],
)
def test_repeated_field_rejected(fields, reason):
    # XADD accepts a field name twice, and keeping either value would store a rating the
    # sender may not have meant.
    columns, invalid = validate_entries([("1000-0", fields)])
    assert len(columns) == 0
    assert invalid == [(0, reason)]
