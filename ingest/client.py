"""Client that apps use to send ratings: validate, then XADD to the events stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import redis

from ingest.events import (
    DEFAULT_RATING_MAX,
    DEFAULT_RATING_MIN,
    RatingEvent,
    is_plain_id,
    is_plain_timestamp,
    validate_event,
)
from ingest.packed import send_packed
from store.keys import EVENTS_STREAM

# Events sent per pipeline round trip by push_many.
PUSH_CHUNK = 2000


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

        Nothing is sent when any event is invalid.
        """
        validated = [self._fields(event) for event in events]
        stream_ids: list[str] = []
        for start in range(0, len(validated), PUSH_CHUNK):
            stream_ids.extend(self._send(validated[start : start + PUSH_CHUNK]))
        return stream_ids

    def _send(self, chunk: list[dict[str, str]]) -> list[str]:
        """Send one XADD per event in a single write and return the entry ids, in order."""
        prefix = ("XADD", self.stream, "*")
        commands = [(*prefix, *chain.from_iterable(fields.items())) for fields in chunk]
        return [_text(reply) for reply in send_packed(self.connection, commands)]

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
    rating = float(rating)
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


def _plain_id(value: Any) -> str | None:
    """Return a valid id as text when it is a non-blank str or an int, else None."""
    if type(value) is str:
        return value if is_plain_id(value) else None
    if type(value) is int:
        return str(value)
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
