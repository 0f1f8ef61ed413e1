"""Trimming of the events stream: entries that every consumer group is done with, once old enough.

Redis keeps a stream's entries until they are deleted, so without trimming the events stream
grows by every rating ever pushed (about 35 bytes an event). An entry is kept while any group
still needs it: while it is pending, or not yet delivered.
"""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

# Seconds between two trims by a running consumer.
TRIM_INTERVAL_SECONDS = 10.0


def trim_events(
    connection: redis.Redis, stream: str, keep_seconds: float, now_ms: int, *, group: str
) -> int:
    """Delete the entries older than keep_seconds that every consumer group of `stream` has
    acknowledged; return how many were deleted.

    now_ms is the current time on the Redis server's clock, which automatic entry ids carry.
    Nothing is deleted while `group`, the caller's own group, is missing. A stream deleted and
    created again by a producer may have other apps' groups before the caller creates its
    group again at id 0, and their acknowledgements do not show what the caller stored.
    """
    groups = stream_groups(connection, stream)
    if not any(_text(info["name"]) == group for info in groups):
        return 0
    floor = (max(0, now_ms - int(keep_seconds * 1000)), 0)
    for info in groups:
        # Entries after the last delivered one are still to be read by this group.
        milliseconds, sequence = _parse_id(info["last-delivered-id"])
        floor = min(floor, (milliseconds, sequence + 1))
        if info["pending"]:
            # A consumer may acknowledge the last pending entries after XINFO GROUPS counted
            # them, and XPENDING then reports no oldest one.
            oldest_pending = connection.xpending(stream, info["name"])["min"]
            if oldest_pending is not None:
                floor = min(floor, _parse_id(oldest_pending))
    trimmed = connection.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
    if trimmed:
        log.info("events stream trimmed stream=%s entries=%d below_id=%d-%d", stream, trimmed, *floor)
    return int(trimmed)


def stream_groups(connection: redis.Redis, stream: str) -> list[dict]:
    """Return XINFO GROUPS of `stream`, or an empty list when the stream does not exist."""
    try:
        return connection.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise


def _parse_id(value: bytes | str) -> tuple[int, int]:
    milliseconds, _, sequence = _text(value).partition("-")
    return int(milliseconds), int(sequence or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
