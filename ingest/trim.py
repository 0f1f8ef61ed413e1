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


def trim_events(connection: redis.Redis, stream: str, keep_seconds: float, now_ms: int) -> int:
    """Delete the entries older than keep_seconds that every consumer group of `stream` has
    acknowledged; return how many were deleted.

    now_ms is the current time on the Redis server's clock, which automatic entry ids carry.
    Nothing is deleted from a stream that no group reads.
    """
    try:
        groups = connection.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    if not groups:
        return 0
    floor = (max(0, now_ms - int(keep_seconds * 1000)), 0)
    for group in groups:
        # Entries after the last delivered one are still to be read by this group.
        milliseconds, sequence = _parse_id(group["last-delivered-id"])
        floor = min(floor, (milliseconds, sequence + 1))
        if group["pending"]:
            oldest_pending = connection.xpending(stream, group["name"])["min"]
            floor = min(floor, _parse_id(oldest_pending))
    trimmed = connection.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False)
    if trimmed:
        log.info("events stream trimmed stream=%s entries=%d below_id=%d-%d", stream, trimmed, *floor)
    return int(trimmed)


def _parse_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)
