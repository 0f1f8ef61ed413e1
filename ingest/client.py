"""Client that apps use to send ratings: validate, then XADD to the events stream."""

from __future__ import annotations

import operator
import time
from collections.abc import Iterable, Mapping
from itertools import chain, compress, repeat
from typing import Any

import numpy as np
import redis

from ingest.columns import PRINTABLE_ASCII, CharacterMatrix
from ingest.events import (
    DEFAULT_RATING_MAX,
    DEFAULT_RATING_MIN,
    MAX_FUTURE_SECONDS,
    MAX_ID_LENGTH,
    RatingEvent,
    is_plain_id,
    is_plain_timestamp,
    validate_event,
)
from ingest.packed import send_packed, send_payload
from store.errors import InvalidEventError
from store.keys import EVENTS_STREAM

# Events sent per pipeline round trip by push_many.
PUSH_CHUNK = 2000

# Stream fields of an event checked as columns, in the order XADD sends them.
PLAIN_FIELDS = ("user_id", "item_id", "rating", "timestamp")


class RatingClient:
    """Send rating events to the Redis stream the ingest consumer reads.

    Every event is validated before anything is sent, so a bad event raises InvalidEventError
    in the caller and never reaches the stream.
    """

    def __init__(
        self,
        connection: redis.Redis,
        *,
        rating_min: float = DEFAULT_RATING_MIN,
        rating_max: float = DEFAULT_RATING_MAX,
        stream: str = EVENTS_STREAM,
    ) -> None:
        self.connection = connection
        self.rating_min = rating_min
        self.rating_max = rating_max
        self.stream = stream

    def push(
        self,
        user_id: str | int,
        item_id: str | int,
        rating: float,
        timestamp: int | None = None,
        event_id: str | None = None,
    ) -> str:
        """Validate and send one rating; return its stream entry id.

        timestamp is seconds since the epoch; None means the time Redis receives the event.
        """
        event = self._validate(
            {
                "user_id": user_id,
                "item_id": item_id,
                "rating": rating,
                "timestamp": timestamp,
                "event_id": event_id,
            }
        )
        return _text(self.connection.xadd(self.stream, event.to_fields()))

    def push_many(self, events: Iterable[RatingEvent | Mapping[str, Any]]) -> list[str]:
        """Validate all events, then send them pipelined in order; return their stream ids.

        Nothing is sent when any event is invalid; the error names the first invalid event's
        position, as in "events[3]: rating: ...".
        """
        if isinstance(events, (str, bytes, Mapping, RatingEvent)):
            raise InvalidEventError(f"events: must be a list of events, got {type(events).__name__}")
        events = list(events)
        accepted, columns = _plain_columns(events, self.rating_min, self.rating_max)
        stream_ids: list[str] = []
        if accepted.all():
            # Every event is plain: encode the XADDs from the columns in one pass per chunk.
            for start in range(0, len(events), PUSH_CHUNK):
                chunk = [column[start : start + PUSH_CHUNK] for column in columns]
                replies = send_payload(self.connection, xadd_payload(self.stream, chunk), len(chunk[0]))
                stream_ids.extend(map(_text, replies))
            return stream_ids
        commands = self._xadd_commands(events, accepted, columns)
        for start in range(0, len(commands), PUSH_CHUNK):
            replies = send_packed(self.connection, commands[start : start + PUSH_CHUNK])
            stream_ids.extend(map(_text, replies))
        return stream_ids

    def _xadd_commands(
        self,
        events: list[RatingEvent | Mapping[str, Any]],
        accepted: np.ndarray | None = None,
        columns: list[list[str]] | None = None,
    ) -> list[tuple]:
        """Return one XADD command per event, in order, or raise InvalidEventError.

        `accepted` and `columns` are what _plain_columns returns for `events`, computed here
        when not given. Every event it did not accept is checked alone by _fields, which raises
        for the first invalid one.
        """
        if accepted is None or columns is None:
            accepted, columns = _plain_columns(events, self.rating_min, self.rating_max)
        names = PLAIN_FIELDS[: len(columns)]
        plain = (
            ("XADD", self.stream, "*", *chain.from_iterable(zip(names, values))) for values in zip(*columns)
        )
        prefix = ("XADD", self.stream, "*")
        commands = []
        for position, (event, is_plain) in enumerate(zip(events, accepted.tolist())):
            if is_plain:
                commands.append(next(plain))
                continue
            if not isinstance(event, (RatingEvent, Mapping)):
                raise InvalidEventError(
                    f"events[{position}]: must be a RatingEvent or a mapping of fields, "
                    f"got {type(event).__name__}"
                )
            try:
                fields = self._fields(event)
            except InvalidEventError as exc:
                raise InvalidEventError(f"events[{position}]: {exc}") from None
            commands.append((*prefix, *chain.from_iterable(fields.items())))
        return commands

    def _fields(self, event: RatingEvent | Mapping[str, Any]) -> dict[str, str]:
        """Return the stream fields of a valid event, or raise InvalidEventError.

        An event of plain Python values (string or integer ids, a float or integer rating, an
        integer timestamp) is checked directly; anything else goes through the full model, so
        the error message is the same either way.
        """
        if isinstance(event, RatingEvent):
            return event.to_fields()
        fields = _plain_fields(event, self.rating_min, self.rating_max)
        if fields is not None:
            return fields
        return self._validate(event).to_fields()

    def _validate(self, event: RatingEvent | Mapping[str, Any]) -> RatingEvent:
        data = event.model_dump() if isinstance(event, RatingEvent) else event
        return validate_event(data, self.rating_min, self.rating_max)


def _plain_fields(
    event: Mapping[str, Any], rating_min: float, rating_max: float
) -> dict[str, str] | None:
    """Return the stream fields of a plainly valid event, or None to leave it to the full model."""
    user_id = _plain_id(event.get("user_id"))
    item_id = _plain_id(event.get("item_id"))
    rating = event.get("rating")
    if user_id is None or item_id is None or type(rating) not in (float, int):
        return None
    try:
        rating = float(rating)
    except OverflowError:
        return None
    if not rating_min <= rating <= rating_max:
        return None
    fields = {"user_id": user_id, "item_id": item_id, "rating": repr(rating)}
    timestamp = event.get("timestamp")
    if timestamp is not None:
        if type(timestamp) is not int or not is_plain_timestamp(timestamp):
            return None
        fields["timestamp"] = str(timestamp)
    event_id = event.get("event_id")
    if event_id is not None:
        if type(event_id) is not str or not is_plain_id(event_id):
            return None
        fields["event_id"] = event_id
    return fields


def _plain_columns(events: list, rating_min: float, rating_max: float) -> tuple[np.ndarray, list[list[str]]]:
    """Check events as columns; return (which are plainly valid, their field values as text).

    An event passes when it is a dict with ids of printable ASCII other than space, a float or
    integer rating in the scale and no event_id. Its timestamp must be an integer within the
    limits when the first event has an integer timestamp, else absent. The columns hold, for
    the events that pass and in their order, the values of PLAIN_FIELDS that _plain_fields
    gives: user_id, item_id, rating, and timestamp when the events have one. False leaves the
    event to the single-event check, which gives the reason.
    """
    count = len(events)
    if count == 0 or set(map(type, events)) != {dict}:
        return np.zeros(count, dtype=bool), [[], [], []]

    def column(name: str) -> list:
        return list(map(dict.get, events, repeat(name)))

    user_ids, item_ids, ratings = column("user_id"), column("item_id"), column("rating")
    timestamps, event_ids = column("timestamp"), column("event_id")
    accepted = np.fromiter(map(operator.is_, event_ids, repeat(None)), dtype=bool, count=count)
    accepted &= _printable_ascii_ids(user_ids) & _printable_ascii_ids(item_ids)

    numeric = _of_types(ratings, (float, int))
    stars = np.full(count, np.nan)
    try:
        stars[numeric] = list(compress(ratings, numeric))
    except OverflowError:  # an integer rating beyond float range: the single check rejects it
        numeric = np.array([type(value) is float for value in ratings], dtype=bool)
        stars[numeric] = list(compress(ratings, numeric))
    accepted &= numeric & (stars >= rating_min) & (stars <= rating_max)

    with_timestamp = type(timestamps[0]) is int
    if with_timestamp:
        integral = _of_types(timestamps, (int,))
        seconds = np.full(count, -1, dtype=np.int64)
        # Integers beyond int64 stay -1 and are rejected, like any out of the limits.
        seconds[integral] = [value if -1 <= value < 2**63 else -1 for value in compress(timestamps, integral)]
        accepted &= (seconds >= 0) & (seconds <= time.time() + MAX_FUTURE_SECONDS)
    else:
        accepted &= np.fromiter(map(operator.is_, timestamps, repeat(None)), dtype=bool, count=count)

    if not accepted.all():
        user_ids, item_ids = list(compress(user_ids, accepted)), list(compress(item_ids, accepted))
    columns = [user_ids, item_ids, list(map(repr, stars[accepted].tolist()))]
    if with_timestamp:
        columns.append(list(map(str, seconds[accepted].tolist())))
    return accepted, columns


def xadd_payload(stream: str, columns: list[list[str]]) -> bytes:
    """Encode one `XADD stream * user_id .. item_id .. rating .. [timestamp ..]` per row of
    `columns` (as _plain_columns gives them) in the Redis protocol, as hiredis would.

    The values are ASCII, as _plain_columns checked, so their length in characters is their
    length in bytes. Formatting one string per event cost a third of packing each command.
    """
    stream_bytes = len(stream.encode())
    names = PLAIN_FIELDS[: len(columns)]
    template = f"*{3 + 2 * len(names)}\r\n$4\r\nXADD\r\n${stream_bytes}\r\n{_escaped(stream)}\r\n$1\r\n*\r\n"
    template += "".join(f"${len(name)}\r\n{name}\r\n$%d\r\n%s\r\n" for name in names)
    if len(columns) == 4:
        rows = [template % (len(u), u, len(i), i, len(r), r, len(t), t) for u, i, r, t in zip(*columns)]
    else:
        rows = [template % (len(u), u, len(i), i, len(r), r) for u, i, r in zip(*columns)]
    return "".join(rows).encode()


def _escaped(text: str) -> str:
    """Return `text` with % doubled, so it passes through %-formatting unchanged."""
    return text.replace("%", "%%")


def _printable_ascii_ids(values: list) -> np.ndarray:
    is_text = _of_types(values, (str,))
    if not is_text.all():
        values = [value if type(value) is str else "" for value in values]
    return is_text & CharacterMatrix(values, MAX_ID_LENGTH).only(PRINTABLE_ASCII)


def _of_types(values: list, types: tuple[type, ...]) -> np.ndarray:
    """Return which values are exactly of one of `types` (so a bool is not an int)."""
    allowed = dict.fromkeys(types, True)
    return np.fromiter(map(allowed.get, map(type, values), repeat(False)), dtype=bool, count=len(values))


def _plain_id(value: Any) -> str | None:
    """Return a valid id as text when it is a non-blank str or an int, else None."""
    if type(value) is str:
        return value if is_plain_id(value) else None
    if type(value) is int:
        return str(value)
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
