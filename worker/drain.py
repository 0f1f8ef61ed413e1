"""The refresh job that takes every due pending user (worker/pending.py) and refreshes them."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import redis
from rq import get_current_job

from store.errors import SnapshotNotFoundError
from worker.context import current_settings
from worker.pending import PendingRefreshes, PendingUser
from worker.queues import enqueue_pending_job
from worker.refresh import refresh_users
from worker.snapshot_cache import current_snapshot

log = logging.getLogger(__name__)

# Users folded in and written per round; a refold after a retrain is taken in rounds this size.
ROUND_USERS = 2000
# Seconds a job keeps taking rounds before it hands over to a successor job, so a worker under
# steady traffic still returns to RQ (registries, other queues) now and then.
JOB_SECONDS = 10.0


def refresh_pending_job() -> dict[str, Any]:
    """Refresh due pending users in rounds until none is pending or JOB_SECONDS have passed.

    A job that finds users taken by an earlier run of itself (a retry after its worker died)
    refreshes them first. A round that fails puts its users back as due and raises, so RQ's
    retry and later jobs refresh them.
    """
    started = time.perf_counter()
    job = get_current_job()
    connection: redis.Redis = job.connection
    settings = current_settings()
    pending = PendingRefreshes(connection)

    try:
        snapshot = current_snapshot(settings.snapshots_dir)
    except SnapshotNotFoundError:
        # Users stay pending; the first retrain writes every list and refolds them.
        pending.release_schedule()
        log.warning("refresh waits for a snapshot job=%s pending=%d", job.id, pending.count())
        return {"rounds": 0, "users": 0, "written": 0}

    rounds = users = written = skipped = 0
    batch = pending.taken_users(job.id)
    wait_ms = 0
    while True:
        if not batch:
            batch, wait_ms = pending.take_due(job.id, ROUND_USERS)
        if batch:
            snapshot = current_snapshot(settings.snapshots_dir)
            batch, passed_over = split_by_snapshot(batch, snapshot)
            skipped += passed_over
            if batch:
                written += _refresh_round(connection, pending, job.id, snapshot, batch, settings.top_n)
            else:
                # Every entry was passed over, so nothing is written, but the taken hash must go.
                pending.finish(job.id)
            rounds += 1
            users += len(batch)
            # `streamrec status` shows this, and its age shows whether the job still makes progress.
            job.meta["progress"] = {
                "stage": "refreshing", "rounds": rounds, "users": users,
                "updated_at": round(time.time(), 1),
            }
            job.save_meta()
        batch = {}

        if wait_ms < 0:
            break
        if time.perf_counter() - started > JOB_SECONDS:
            # REFRESH_SCHEDULED stays set: the successor takes over this job's role.
            enqueue_pending_job(connection)
            break
        if wait_ms > 0:
            time.sleep(wait_ms / 1000.0)

    seconds = time.perf_counter() - started
    log.info(
        "refresh finished job=%s rounds=%d users=%d written=%d skipped=%d version=%d seconds=%.3f",
        job.id, rounds, users, written, skipped, snapshot.version, seconds,
    )
    return {
        "rounds": rounds, "users": users, "written": written, "skipped": skipped,
        "version": snapshot.version,
    }


def split_by_snapshot(
    batch: dict[str, PendingUser], snapshot
) -> tuple[dict[str, PendingUser], int]:
    """Drop the newer-only entries that `snapshot` cannot complete, and empty those it already
    contains; return the entries to refresh and the number dropped.

    An entry with ratings newer than batch B (since_seq) and taken at batch S (seq) needs a
    snapshot whose watermark W lies in [B, S]. Then the snapshot contains every rating up to W and
    the entry every rating after B. The other cases:

    - W > S: the snapshot already contains every rating of the entry, so the entry is replaced
      by an empty one at seq W, and the user is refolded from their row in the snapshot. The
      publication also writes the user's list, from the trained factors, but a retrain worker
      killed after publishing leaves that undone until a retrain worker starts again.
    - W < B: CURRENT moved to a version with an older watermark (a rollback publishes one). The
      entry is dropped. The version's publication requests a refold of every user with ratings
      after W, which includes this user, with entries relative to W.
    - A snapshot without training ratings (from an earlier release, or restored from one) cannot
      complete any entry, so the entry is dropped. Its publication refolds the users with ratings
      after its watermark, with complete ratings, and writes the lists of the others.
    """
    usable: dict[str, PendingUser] = {}
    for user_id, user in batch.items():
        since = user.since_seq
        if since is None:
            usable[user_id] = user
        elif snapshot.seen_ratings is None:
            continue
        elif since <= snapshot.watermark <= user.seq:
            usable[user_id] = user
        elif user.seq < snapshot.watermark:
            usable[user_id] = PendingUser(
                snapshot.watermark, np.zeros(0, np.float32), encoded_ids=b"",
                since_seq=snapshot.watermark,
            )
    dropped = len(batch) - len(usable)
    if dropped:
        log.info(
            "refresh entries passed over users=%d version=%d watermark=%d reason=written against "
            "another snapshot", dropped, snapshot.version, snapshot.watermark,
        )
    return usable, dropped


def _refresh_round(
    connection: redis.Redis,
    pending: PendingRefreshes,
    job_id: str,
    snapshot,
    batch: dict[str, PendingUser],
    top_n: int,
) -> int:
    started = time.perf_counter()
    users = {user_id: (user.item_keys, user.ratings) for user_id, user in batch.items()}
    seqs = [user.seq for user in batch.values()]
    newer_only = [user.since_seq is not None for user in batch.values()]
    try:
        written = refresh_users(connection, snapshot, users, seqs, top_n, newer_only)
    except Exception:
        returned = pending.give_back(job_id)
        pending.release_schedule()
        # RQ logs the error with its traceback when the job fails.
        log.warning("refresh round failed, users put back job=%s users=%d", job_id, returned)
        raise
    pending.finish(job_id)
    log.debug(
        "refresh round written job=%s users=%d written=%d max_seq=%d seconds=%.3f",
        job_id, len(batch), written, max(seqs), time.perf_counter() - started,
    )
    return written
