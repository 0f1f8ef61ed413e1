"""RQ queues for refresh and retrain jobs, and the functions that enqueue them.

Job arguments are JSON (rq's JSONSerializer), never pickle, so a job enqueued by one version of
streamrec can be read by a worker of another, and by tools in other languages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from store import keys
from worker.pending import MAX_DELAY_MS, QUIET_MS, PendingRefreshes

log = logging.getLogger(__name__)

# Seconds a refresh job may run before RQ kills it; a refresh folds in one batch of users.
REFRESH_TIMEOUT_SECONDS = 120
# Seconds a retrain may run before RQ kills it. A job abandoned by a dead worker is found sooner,
# when its lease runs out (worker/heartbeat.py).
RETRAIN_TIMEOUT_SECONDS = 3600
# Seconds RQ keeps a finished job's result and metadata, so `streamrec status` can show them.
RESULT_TTL_SECONDS = 24 * 3600

# Times RQ runs a failed job again, including a job abandoned by a worker that died, which RQ
# finds once the job's lease has run out (worker/heartbeat.py).
REFRESH_RETRIES = 3
RETRAIN_RETRIES = 1

REFRESH_JOB = "worker.refresh.refresh_users_job"
PENDING_JOB = "worker.drain.refresh_pending_job"
RETRAIN_JOB = "worker.retrain.retrain_job"


def refresh_queue(connection: redis.Redis, *, is_async: bool = True) -> Queue:
    return Queue(
        keys.REFRESH_QUEUE,
        connection=connection,
        serializer=JSONSerializer,
        is_async=is_async,
        default_timeout=REFRESH_TIMEOUT_SECONDS,
    )


def retrain_queue(connection: redis.Redis, *, is_async: bool = True) -> Queue:
    return Queue(
        keys.RETRAIN_QUEUE,
        connection=connection,
        serializer=JSONSerializer,
        is_async=is_async,
        default_timeout=RETRAIN_TIMEOUT_SECONDS,
    )


def refresh_payload(
    user_ratings: dict[str, tuple[np.ndarray, np.ndarray]], seq: int
) -> dict[str, Any]:
    """Turn each user's (item_ids, ratings) arrays into the JSON body of a refresh job."""
    users = {
        str(user_id): [[str(item) for item in item_ids], [float(r) for r in ratings]]
        for user_id, (item_ids, ratings) in user_ratings.items()
    }
    return {"seq": int(seq), "users": users}


class RefreshEnqueuer:
    """The callable the ingest consumer uses to hand touched users to the workers.

    Users go to the pending refreshes (worker/pending.py), which keep one refresh per user and
    hold it back until the user has been quiet for `quiet_ms`, at most `max_delay_ms`. A refresh
    job is enqueued only when none is queued or running, and each job takes every user that is
    due. With `is_async=False` each call instead runs one refresh job inside the caller's process,
    which is how the embedded demo works without a separate worker.
    """

    def __init__(
        self,
        connection: redis.Redis,
        *,
        is_async: bool = True,
        quiet_ms: int = QUIET_MS,
        max_delay_ms: int = MAX_DELAY_MS,
    ) -> None:
        self._connection = connection
        self._is_async = is_async
        self._queue = refresh_queue(connection, is_async=is_async)
        self._pending = PendingRefreshes(connection, quiet_ms=quiet_ms, max_delay_ms=max_delay_ms)

    @property
    def accepts_deltas(self) -> bool:
        """Whether calls may pass UserRows holding only ratings newer than a snapshot's watermark.

        Only the pending refreshes store such entries. Inline jobs take complete ratings.
        """
        return self._is_async

    def __call__(self, user_ratings: Mapping[str, tuple[np.ndarray, np.ndarray]], seq: int) -> None:
        if not user_ratings:
            return
        if not self._is_async:
            if getattr(user_ratings, "since_seq", None) is not None:
                raise ValueError(
                    "user_ratings: inline refresh jobs need complete ratings, got only those "
                    f"written after batch {user_ratings.since_seq}"
                )
            payload = refresh_payload(user_ratings, seq)
            self._queue.enqueue(
                REFRESH_JOB, payload, result_ttl=RESULT_TTL_SECONDS, failure_ttl=RESULT_TTL_SECONDS,
                retry=Retry(max=REFRESH_RETRIES),
            )
            return
        if not self._pending.add(user_ratings, seq):
            log.debug("refresh pending users=%d seq=%d", len(user_ratings), seq)
            return
        try:
            job = enqueue_pending_job(self._connection)
        except Exception:
            # Without a job, no refresh would take these users until the schedule key expired.
            self._pending.release_schedule()
            raise
        log.debug("refresh enqueued job=%s users=%d seq=%d", job.id, len(user_ratings), seq)


def enqueue_pending_job(connection: redis.Redis):
    """Enqueue one job that refreshes the pending users that are due."""
    return refresh_queue(connection).enqueue(
        PENDING_JOB, result_ttl=RESULT_TTL_SECONDS, failure_ttl=RESULT_TTL_SECONDS,
        retry=Retry(max=REFRESH_RETRIES),
    )


def enqueue_retrain(
    connection: redis.Redis, overrides: dict[str, Any] | None = None, *, reason: str = "operator"
):
    """Enqueue one full retrain; `overrides` replaces hyperparameters of the default ALSConfig."""
    job = retrain_queue(connection).enqueue(
        RETRAIN_JOB,
        {"overrides": overrides or {}, "reason": reason},
        result_ttl=RESULT_TTL_SECONDS,
        failure_ttl=RESULT_TTL_SECONDS,
        retry=Retry(max=RETRAIN_RETRIES),
    )
    log.info("retrain enqueued job=%s reason=%s", job.id, reason)
    return job
