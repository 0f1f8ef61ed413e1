"""Client that apps use to send ratings: validate, then XADD to the events stream."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from ingest.events import DEFAULT_RATING_MAX, DEFAULT_RATING_MIN, RatingEvent, validate_event
from store.keys import EVENTS_STREAM

# Events sent per pipeline round trip by push_many.
PUSH_CHUNK = 1000


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
        validated = [self._validate(event) for event in events]
        stream_ids: list[str] = []
        for start in range(0, len(validated), PUSH_CHUNK):
            with self.connection.pipeline(transaction=False) as pipe:
                for event in validated[start : start + PUSH_CHUNK]:
                    pipe.xadd(self.stream, event.to_fields())
                stream_ids.extend(_text(stream_id) for stream_id in pipe.execute())
        return stream_ids

    def _validate(self, event: RatingEvent | Mapping[str, Any]) -> RatingEvent:
        data = event.model_dump() if isinstance(event, RatingEvent) else event
        return validate_event(data, self.rating_min, self.rating_max)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
