"""Validation of a batch of stream entries as columns, with numpy doing the per-entry checks.

Entries in the form every client sends (user_id, item_id, rating and an optional timestamp, in
that order, as ASCII bytes) are checked column by column. Any other entry is validated alone by
event_from_entry, so an invalid entry gets the same reason, naming the field and value, on
either path, and a valid one the same values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Union

import numpy as np

from ingest.columns import DIGITS, PRINTABLE_ASCII, CharacterMatrix
from ingest.events import (
    DEFAULT_RATING_MAX,
    DEFAULT_RATING_MIN,
    MAX_FUTURE_SECONDS,
    MAX_ID_LENGTH,
    event_from_entry,
    stream_id_milliseconds,
)
from store.errors import InvalidEventError

# Field names of the plain layouts, as a client writes them: with and without a timestamp.
PLAIN_KEYS = (b"user_id", b"item_id", b"rating", b"timestamp")
# Maximum length of a rating or timestamp text on the column path. Longer ones take the single path.
MAX_NUMBER_LENGTH = 18

# Entry fields as redis-py parses them (a mapping) or as the server sends them (a flat list of
# alternating names and values).
EntryFields = Union[Mapping[bytes | str, bytes | str], Sequence[bytes | str]]


class EventColumns:
    """A batch of valid events as parallel numpy columns, in stream order."""

    __slots__ = ("positions", "user_ids", "item_ids", "ratings", "timestamps")

    def __init__(
        self,
        positions: np.ndarray,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        ratings: np.ndarray,
        timestamps: np.ndarray,
    ) -> None:
        self.positions = positions  # int64: index of each event in the batch it came from
        self.user_ids = user_ids  # object array of str
        self.item_ids = item_ids  # object array of str
        self.ratings = ratings  # float32 stars
        self.timestamps = timestamps  # int64 seconds since the epoch

    @classmethod
    def empty(cls) -> EventColumns:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, object),
            np.empty(0, object),
            np.empty(0, np.float32),
            np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def take(self, rows: np.ndarray | slice) -> EventColumns:
        """Return the events at `rows` (indices into these columns, or a slice)."""
        return EventColumns(
            self.positions[rows],
            self.user_ids[rows],
            self.item_ids[rows],
            self.ratings[rows],
            self.timestamps[rows],
        )


def validate_entries(
    entries: Sequence[tuple[bytes | str, EntryFields]],
    rating_min: float = DEFAULT_RATING_MIN,
    rating_max: float = DEFAULT_RATING_MAX,
) -> tuple[EventColumns, list[tuple[int, str]]]:
    """Validate stream entries in bulk; return (valid columns, [(position, reason)] of invalid ones).

    Each entry is (stream id, fields). A missing timestamp is taken from the entry id, in whole
    seconds. Positions index `entries`, and both results are in their order.
    """
    count = len(entries)
    if count == 0:
        return EventColumns.empty(), []
    stream_ids, flat = map(list, zip(*entries))
    if not set(map(type, flat)) <= {list, tuple}:
        flat = [_flat_fields(fields) for fields in flat]

    # Entries of the two plain layouts (6 or 8 fields) are checked as columns, one group per
    # layout. A batch from one client is usually a single group, which needs no regrouping.
    lengths = np.fromiter(map(len, flat), dtype=np.int64, count=count)
    others: list[int] = np.flatnonzero((lengths != 6) & (lengths != 8)).tolist()
    parts: list[EventColumns] = []
    now = time.time()
    for length in (6, 8):
        positions = np.flatnonzero(lengths == length)
        if positions.shape[0] == 0:
            continue
        if positions.shape[0] == count:
            group_fields, group_ids = flat, stream_ids
        else:
            group_fields = [flat[p] for p in positions.tolist()]
            group_ids = [stream_ids[p] for p in positions.tolist()]
        plain, rejected = _check_plain_group(
            group_fields, group_ids, positions, rating_min, rating_max, now
        )
        parts.append(plain)
        others.extend(positions[rejected].tolist())

    # Every entry the columns did not accept is validated alone, which gives the reason.
    invalid: list[tuple[int, str]] = []
    single = _SingleEntries()
    for position in sorted(others):
        fields = flat[position]
        repeated = _repeated_field(fields)
        if repeated is not None:
            invalid.append((position, repeated))
            continue
        mapping = dict(zip(fields[0::2], fields[1::2]))
        try:
            event = event_from_entry(_text(stream_ids[position]), mapping, rating_min, rating_max)
        except InvalidEventError as exc:
            invalid.append((position, str(exc)))
            continue
        single.append(position, event.user_id, event.item_id, event.rating, int(event.timestamp))
    parts.append(single.columns())

    columns = _concatenate(parts)
    order = np.argsort(columns.positions, kind="stable")
    return columns.take(order), invalid


def _check_plain_group(
    fields: list[Sequence[bytes | str]],
    stream_ids: list[bytes | str],
    positions: np.ndarray,
    rating_min: float,
    rating_max: float,
    now: float,
) -> tuple[EventColumns, list[int]]:
    """Check entries of one field count as columns; return (accepted columns, rows left over).

    `positions` are the entries' indices in the whole batch; the rows left over index `fields`.
    """
    count = len(fields)
    has_timestamp = len(fields[0]) == 8
    columns = list(zip(*fields))

    accepted = np.ones(count, dtype=bool)
    for index, name in enumerate(PLAIN_KEYS[: len(columns) // 2]):
        names = columns[2 * index]
        if names.count(name) != count:
            accepted &= np.fromiter((key == name for key in names), dtype=bool, count=count)

    values = columns[1::2]
    if any(set(map(type, column)) != {bytes} for column in values):
        # Values are text when the connection decodes replies; the single path handles that.
        return EventColumns.empty(), np.arange(count)
    accepted &= _plain_ids(values[0]) & _plain_ids(values[1])

    # A rating of digits and at most one decimal point is a float literal that the model reads
    # the same way. Anything else (signs, exponents, spaces, "nan") takes the single path.
    rating_bytes = CharacterMatrix(values[2], MAX_NUMBER_LENGTH)
    points = rating_bytes.count(b".")
    accepted &= rating_bytes.only(DIGITS + b".") & (points <= 1) & (rating_bytes.lengths > points)
    ratings = np.full(count, np.nan)
    ratings[accepted] = _convert(values[2], accepted, float)
    accepted &= (ratings >= rating_min) & (ratings <= rating_max)

    if has_timestamp:
        accepted &= CharacterMatrix(values[3], MAX_NUMBER_LENGTH).only(DIGITS)
        timestamps = np.zeros(count, dtype=np.int64)
        timestamps[accepted] = _convert(values[3], accepted, int)
        accepted &= timestamps <= now + MAX_FUTURE_SECONDS
    else:
        # The entry id's time: Redis fixes it when the entry is added, so redelivery agrees.
        timestamps = np.fromiter(
            (stream_id_milliseconds(_text(stream_id)) // 1000 for stream_id in stream_ids),
            dtype=np.int64,
            count=count,
        )
        # An id far ahead of the clock gets the clock instead, as in events.entry_timestamp.
        timestamps[timestamps > now + MAX_FUTURE_SECONDS] = int(now)

    rows = np.flatnonzero(accepted)
    plain = EventColumns(
        positions[rows],
        _object_array(_convert(values[0], accepted, bytes.decode)),
        _object_array(_convert(values[1], accepted, bytes.decode)),
        ratings[rows].astype(np.float32),
        timestamps[rows],
    )
    return plain, np.flatnonzero(~accepted)


def _convert(values: Sequence[bytes], accepted: np.ndarray, convert) -> list:
    """Apply `convert` to the accepted values only, since the others may not parse."""
    if accepted.all():
        return list(map(convert, values))
    return [convert(values[row]) for row in np.flatnonzero(accepted).tolist()]


def _plain_ids(values: Sequence[bytes]) -> np.ndarray:
    """Return which ids are 1 to MAX_ID_LENGTH printable ASCII characters other than space."""
    return CharacterMatrix(values, MAX_ID_LENGTH).only(PRINTABLE_ASCII)


def _repeated_field(fields: Sequence[bytes | str]) -> str | None:
    """Return the reason to reject an entry that gives a field name more than once, else None.

    XADD accepts repeated field names, and a mapping of the fields would keep only the last
    value, so such an entry could store a user, item or rating the sender did not mean.
    """
    names = [_printable(name) for name in fields[0::2]]
    if len(set(names)) == len(names):
        return None
    for name in names:
        if names.count(name) > 1:
            values = [_printable(value) for key, value in zip(names, fields[1::2]) if key == name]
            quoted_values = " and ".join(repr(value[:80]) for value in values)
            return f"{name}: given {len(values)} times, got {quoted_values}"
    return None


def _printable(value: bytes | str) -> str:
    """Decode a field name or value for a message, escaping bytes that are not UTF-8."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _flat_fields(fields: EntryFields) -> Sequence[bytes | str]:
    if isinstance(fields, Mapping):
        return list(chain.from_iterable(fields.items()))
    return fields


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _SingleEntries:
    """Collects the events validated one at a time, to join the column-checked ones."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.user_ids: list[str] = []
        self.item_ids: list[str] = []
        self.ratings: list[float] = []
        self.timestamps: list[int] = []

    def append(self, position: int, user_id: str, item_id: str, rating: float, timestamp: int) -> None:
        self.positions.append(position)
        self.user_ids.append(user_id)
        self.item_ids.append(item_id)
        self.ratings.append(rating)
        self.timestamps.append(timestamp)

    def columns(self) -> EventColumns:
        return EventColumns(
            np.asarray(self.positions, dtype=np.int64),
            _object_array(self.user_ids),
            _object_array(self.item_ids),
            np.asarray(self.ratings, dtype=np.float32),
            np.asarray(self.timestamps, dtype=np.int64),
        )


def _object_array(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _concatenate(parts: list[EventColumns]) -> EventColumns:
    return EventColumns(
        np.concatenate([part.positions for part in parts]),
        np.concatenate([part.user_ids for part in parts]),
        np.concatenate([part.item_ids for part in parts]),
        np.concatenate([part.ratings for part in parts]),
        np.concatenate([part.timestamps for part in parts]),
    )
