"""Serving export and refold requests inside the ingest consumer, between two batches."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import redis

from store.database import Database
from store.exports import EXPORT, REFOLD_SINCE, send_export_reply
from store.keys import EXPORT_REQUESTS, EXPORT_REQUESTS_SERVING
from store.user_rows import UserRows

log = logging.getLogger(__name__)

# Users read from the database and handed to enqueue_refresh per call when refolding after a
# retrain. Refresh jobs take pending users in rounds of their own size.
REFOLD_CHUNK = 500

# Takes each user's ratings, a mapping user_id -> (item ids, stars) such as UserRows.
EnqueueRefresh = Callable[[Mapping[str, tuple[np.ndarray, np.ndarray]], int], object]
# Reads the named users' ratings for their refresh entries (Database.user_rows, or RefreshRows).
ReadRows = Callable[[Sequence[str]], UserRows]


def serve_requests(
    connection: redis.Redis,
    database: Database,
    exports_dir: Path,
    enqueue_refresh: EnqueueRefresh,
    max_requests: int = 10,
    rows: ReadRows | None = None,
    before_serving: Callable[[], object] | None = None,
) -> int:
    """Take and serve up to `max_requests` pending requests without blocking; return how many.

    A request moves to a serving list while it is served and leaves it when done, so a consumer
    killed midway serves it again after restart_requests. A malformed request is logged and
    dropped. A failed export gets a reply carrying its error. A refold reads each user's ratings
    with `rows`, by default their complete ratings. `before_serving` is called after a request
    is taken and before it is served. When it raises, the request goes back to the front of
    the queue.
    """
    rows = rows or database.user_rows
    served = 0
    while served < max_requests:
        raw = connection.lmove(EXPORT_REQUESTS, EXPORT_REQUESTS_SERVING, "LEFT", "RIGHT")
        if raw is None:
            break
        if before_serving is not None:
            try:
                before_serving()
            except BaseException:
                # When Redis is down here too, the request stays in the serving list, and the
                # consumer queues it again with restart_requests once Redis is back.
                connection.lmove(EXPORT_REQUESTS_SERVING, EXPORT_REQUESTS, "RIGHT", "LEFT")
                raise
        served += 1
        try:
            _serve_one(connection, database, exports_dir, enqueue_refresh, rows, raw)
        finally:
            connection.lrem(EXPORT_REQUESTS_SERVING, 1, raw)
    return served


def restart_requests(connection: redis.Redis) -> int:
    """Put requests a stopped consumer had taken back at the front of the queue; return how many.

    Call when a consumer starts, and after a Redis outage, before serve_requests. Only one
    consumer serves requests.
    """
    moved = 0
    while connection.lmove(EXPORT_REQUESTS_SERVING, EXPORT_REQUESTS, "RIGHT", "LEFT") is not None:
        moved += 1
    if moved:
        log.info("unfinished requests queued again requests=%d", moved)
    return moved


def _serve_one(
    connection: redis.Redis, database: Database, exports_dir: Path, enqueue_refresh: EnqueueRefresh,
    rows: ReadRows, raw,
) -> None:
    """Serve one request taken from the queue; a malformed one is logged and dropped."""
    try:
        request = json.loads(raw)
        kind = request["kind"]
    except (ValueError, TypeError, KeyError):
        log.warning("request dropped reason=not a JSON object with a kind request=%.200r", raw)
        return

    if kind == EXPORT and isinstance(request.get("reply_to"), str):
        serve_export(connection, database, exports_dir, request["reply_to"])
    elif kind == REFOLD_SINCE and isinstance(request.get("seq"), int):
        serve_refold(database, enqueue_refresh, request["seq"], rows)
    else:
        log.warning("request dropped reason=unknown kind or missing field request=%.200r", raw)


def serve_export(
    connection: redis.Redis, database: Database, exports_dir: Path, reply_to: str
) -> None:
    """Export all ratings to exports_dir/ratings-<seq>.parquet and reply on `reply_to`."""
    path = Path(exports_dir) / f"ratings-{database.current_seq():08d}.parquet"
    try:
        watermark = database.export_ratings(path)
    except Exception as exc:  # the requester must hear about any failure, not wait for a timeout
        log.error("export failed path=%s reply_to=%s", path, reply_to, exc_info=True)
        send_export_reply(connection, reply_to, {"error": f"{type(exc).__name__}: {exc}"})
        return
    send_export_reply(
        connection, reply_to,
        {"path": str(path.resolve()), "watermark": watermark, "generation": database.ratings_generation()},
    )


def serve_refold(
    database: Database, enqueue_refresh: EnqueueRefresh, since_seq: int, rows: ReadRows | None = None
) -> int:
    """Enqueue refresh jobs, in chunks, for users updated after batch `since_seq`; return the count.

    `rows` reads each chunk's ratings, by default their complete ratings.
    """
    rows = rows or database.user_rows
    user_ids = database.users_updated_since(since_seq)
    seq = database.current_seq()
    for start in range(0, len(user_ids), REFOLD_CHUNK):
        chunk = user_ids[start : start + REFOLD_CHUNK]
        enqueue_refresh(rows(chunk), seq)
    log.info("refold enqueued since_seq=%d users=%d seq=%d", since_seq, len(user_ids), seq)
    return len(user_ids)
