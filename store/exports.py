"""Requests to the ingest consumer, which alone may open the database while it runs.

A request is a JSON object pushed onto the list streamrec:export:requests:

- `{"kind": "export", "reply_to": KEY}`: the consumer writes all ratings to Parquet and pushes
  `{"path": ..., "watermark": ..., "generation": ...}` (or `{"error": ...}`) onto the list KEY,
  which expires. `generation` is the database's ratings_generation (null from an earlier release).
- `{"kind": "refold_since", "seq": W}`: the consumer enqueues refresh jobs for every user with a
  rating written by a batch numbered above W.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import redis

from store.errors import ExportFailedError, ExportTimeoutError
from store.keys import EXPORT_REQUESTS, export_reply_key

log = logging.getLogger(__name__)

# Seconds one BLPOP waits for an export reply before the next one.
BLPOP_SECONDS = 5

# Seconds an export reply stays in Redis when the requester has gone away.
REPLY_TTL_SECONDS = 300

EXPORT = "export"
REFOLD_SINCE = "refold_since"


def request_export(connection: redis.Redis, timeout: float = 60.0) -> tuple[Path, int, str | None]:
    """Ask the running ingest consumer for a Parquet export; return (ratings path, watermark,
    ratings generation).

    Waits up to `timeout` seconds. Raises ExportTimeoutError when no consumer replied in time (the
    request is then withdrawn) and ExportFailedError when the consumer reported an error.
    """
    reply_to = export_reply_key(uuid.uuid4().hex)
    request = json.dumps({"kind": EXPORT, "reply_to": reply_to})
    connection.rpush(EXPORT_REQUESTS, request)
    log.info("export requested reply_to=%s timeout_seconds=%s", reply_to, timeout)

    # Short waits in a loop: one long BLPOP can outlast a connection's socket timeout, which then
    # looks like a Redis outage rather than a consumer that has not replied yet.
    deadline = time.monotonic() + timeout
    answer = None
    while answer is None and (left := deadline - time.monotonic()) > 0:
        answer = connection.blpop([reply_to], timeout=max(1, min(BLPOP_SECONDS, int(left))))
    if answer is None:
        # Withdraw the request so that a consumer started later does not run an unwanted export.
        connection.lrem(EXPORT_REQUESTS, 1, request)
        raise ExportTimeoutError(
            f"no ingest consumer answered the export request within {timeout} s; "
            "start `streamrec ingest`, or stop it so the database file can be opened directly"
        )
    connection.delete(reply_to)

    reply = json.loads(answer[1])
    if "error" in reply:
        raise ExportFailedError(f"the ingest consumer failed to export the ratings: {reply['error']}")
    return Path(reply["path"]), int(reply["watermark"]), reply.get("generation")


def request_refold(connection: redis.Redis, seq: int) -> None:
    """Ask the ingest consumer to refresh every user with a rating written after batch `seq`."""
    connection.rpush(EXPORT_REQUESTS, json.dumps({"kind": REFOLD_SINCE, "seq": int(seq)}))
    log.info("refold requested since_seq=%d", seq)


def send_export_reply(connection: redis.Redis, reply_to: str, reply: dict) -> None:
    """Push an export reply onto `reply_to` and set the list to expire."""
    with connection.pipeline(transaction=True) as pipe:
        pipe.rpush(reply_to, json.dumps(reply))
        pipe.expire(reply_to, REPLY_TTL_SECONDS)
        pipe.execute()
