"""Rating events: validation of what apps send and what the consumer reads from the stream."""

from __future__ import annotations

import math
import numbers
import time
import unicodedata
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from store.errors import InvalidEventError

DEFAULT_RATING_MIN = 0.5
DEFAULT_RATING_MAX = 5.0
# Maximum length of a user_id, item_id or event_id, in characters. Snapshots store ids in
# fixed-width arrays, so one huge id would widen every row.
MAX_ID_LENGTH = 256
# Seconds a timestamp may lie ahead of this machine's clock. A rating from the far future would
# win every later update of the same user and item, since the newer timestamp wins.
MAX_FUTURE_SECONDS = 86_400


class RatingEvent(BaseModel):
    """One rating: a user's stars for an item at a time.

    Integer ids are stored as their decimal strings. The rating scale comes from the validation
    context keys "rating_min" and "rating_max" (validate_event passes them), else 0.5 to 5.0.
    A missing timestamp is filled by the consumer from the stream entry id.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    user_id: str
    item_id: str
    rating: float  # stars
    timestamp: int | None = None  # seconds since the epoch
    event_id: str | None = None  # the sender's own id: validated, then not stored by the consumer

    @field_validator("user_id", "item_id", mode="before")
    @classmethod
    def _check_id(cls, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
            raise ValueError("must be a string or an integer")
        text = str(value) if isinstance(value, str) else str(int(value))
        return _check_id_text(text)

    @field_validator("rating", mode="before")
    @classmethod
    def _check_rating(cls, value: Any, info: ValidationInfo) -> float:
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
            raise ValueError("must be a number")
        if isinstance(value, str) and ("_" in value or not value.isascii()):
            raise ValueError("must be a number")
        try:
            rating = float(value)
        except ValueError:
            raise ValueError("must be a number") from None
        except OverflowError:  # an integer beyond the float range
            raise ValueError("must be a finite number") from None
        if not math.isfinite(rating):
            raise ValueError("must be a finite number")

        context = info.context or {}
        low = float(context.get("rating_min", DEFAULT_RATING_MIN))
        high = float(context.get("rating_max", DEFAULT_RATING_MAX))
        if not low <= rating <= high:
            raise ValueError(f"must be between {low} and {high}")
        return rating

    @field_validator("timestamp", mode="before")
    @classmethod
    def _check_timestamp(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool):
            raise ValueError("must be an integer (seconds since the epoch)")
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            value = int(value)
        if isinstance(value, str):
            if "_" in value or not value.isascii():
                raise ValueError("must be an integer (seconds since the epoch)")
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError("must be an integer (seconds since the epoch)") from None
        if not isinstance(value, int):
            raise ValueError("must be an integer (seconds since the epoch)")
        if value < 0:
            raise ValueError("must be >= 0 (seconds since the epoch)")
        if value > time.time() + MAX_FUTURE_SECONDS:
            raise ValueError(
                f"must not be more than {MAX_FUTURE_SECONDS} s ahead of the clock (seconds since the epoch)"
            )
        return value

    @field_validator("event_id", mode="before")
    @classmethod
    def _check_event_id(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, numbers.Integral)):
            raise ValueError("must be a string or an integer")
        return _check_id_text(str(value) if isinstance(value, str) else str(int(value)))

    def to_fields(self) -> dict[str, str]:
        """Return the stream entry fields of this event; absent optional fields are left out."""
        fields = {"user_id": self.user_id, "item_id": self.item_id, "rating": repr(self.rating)}
        if self.timestamp is not None:
            fields["timestamp"] = str(self.timestamp)
        if self.event_id is not None:
            fields["event_id"] = self.event_id
        return fields


def is_plain_id(text: str) -> bool:
    """Return whether an id passes every id check, by the cheap tests the fast paths use.

    False does not mean invalid: the caller then validates with the full model, which gives
    the reason.
    """
    return 0 < len(text) <= MAX_ID_LENGTH and text.isprintable() and text == text.strip()


def is_plain_timestamp(value: int) -> bool:
    return 0 <= value <= time.time() + MAX_FUTURE_SECONDS


def _check_id_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    if text != text.strip():
        raise ValueError("must not start or end with whitespace")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters long ({len(text)} given)")
    for char in text:
        # Control characters (NUL among them) do not survive numpy's string arrays, and lone
        # surrogates cannot be encoded for Redis.
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise ValueError(f"must not contain control characters or surrogates, found {char!r}")
    return text


def validate_event(
    data: Mapping[str, Any],
    rating_min: float = DEFAULT_RATING_MIN,
    rating_max: float = DEFAULT_RATING_MAX,
) -> RatingEvent:
    """Validate a mapping of event fields against a rating scale.

    Raises InvalidEventError whose message names each bad field and its value, for example
    `rating: must be between 0.5 and 5.0, got 7`.
    """
    try:
        return RatingEvent.model_validate(
            dict(data), context={"rating_min": rating_min, "rating_max": rating_max}
        )
    except ValidationError as exc:
        raise InvalidEventError(describe_errors(exc)) from None


def event_from_entry(
    stream_id: str,
    fields: Mapping[bytes | str, bytes | str],
    rating_min: float = DEFAULT_RATING_MIN,
    rating_max: float = DEFAULT_RATING_MAX,
) -> RatingEvent:
    """Validate a stream entry; a missing timestamp becomes the entry id's time in whole seconds.

    The entry id is fixed when the entry is added, so redelivery yields the same timestamp.
    Raises InvalidEventError naming the field at fault.
    """
    data: dict[str, Any] = {}
    for key, value in fields.items():
        name = _decode(key, "field name")
        data[name] = _decode(value, name)
    if data.get("timestamp") == "":
        raise InvalidEventError("timestamp: must be an integer (seconds since the epoch), got ''")

    event = validate_event(data, rating_min, rating_max)
    if event.timestamp is None:
        event = event.model_copy(update={"timestamp": entry_timestamp(stream_id, time.time())})
    return event


def entry_timestamp(stream_id: str, now: float) -> int:
    """Return the timestamp of an entry without one: the entry id's time in whole seconds.

    An id more than MAX_FUTURE_SECONDS ahead of `now` was set by hand or by a Redis clock that ran
    ahead. Every later id Redis makes is larger still, so its time would push ratings into the
    future for good; such an entry gets `now` instead.
    """
    seconds = stream_id_milliseconds(stream_id) // 1000
    if seconds > now + MAX_FUTURE_SECONDS:
        return int(now)
    return seconds


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """Return a Redis stream id "<ms>-<n>" as a tuple that sorts in stream order."""
    milliseconds, _, sequence = stream_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def stream_id_milliseconds(stream_id: str) -> int:
    """Return the milliseconds since the epoch at which Redis added a stream entry."""
    return stream_id_key(stream_id)[0]


def describe_errors(exc: ValidationError) -> str:
    """Turn pydantic errors into `field: problem, got value` phrases joined by "; "."""
    phrases = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "event"
        if error["type"] == "missing":
            phrases.append(f"{field}: missing")
            continue
        context_error = (error.get("ctx") or {}).get("error")
        problem = str(context_error) if context_error is not None else error["msg"]
        phrases.append(f"{field}: {problem}, got {_show(error.get('input'))}")
    return "; ".join(phrases)


def _decode(value: bytes | str, field: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEventError(f"{field}: not valid UTF-8, got {value[:40]!r}") from None
    return value


def _show(value: Any) -> str:
    """Render a rejected value: plain for ordinary text and numbers, quoted when blank or padded."""
    if isinstance(value, str):
        if value and value == value.strip() and value.isprintable():
            return value[:80]
        # repr escapes control characters and lone surrogates, which logs and Redis cannot take.
        return repr(value[:80])
    return repr(value)[:80]
