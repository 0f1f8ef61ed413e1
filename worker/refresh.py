"""The refresh job: fold touched users into the current snapshot and rewrite their Redis state."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from numba import njit
from rq import get_current_job

import als
from worker.context import current_settings
from store.snapshots import Snapshot, model_of
from store.user_state import write_users
from worker.lists import top_n_lists
from worker.snapshot_cache import current_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefoldedUsers:
    """A batch of users folded into a model, with their top-N lists."""

    biases: np.ndarray  # float32 (B,)
    factors: np.ndarray  # float32 (B, K)
    seen: list[np.ndarray]  # int32 item_idx each user rated, ascending
    list_idx: np.ndarray  # int64 (B, n), -1 pads a short list
    list_scores: np.ndarray  # float32 (B, n), -inf pads a short list


def refold_users(
    model: als.ALSModel,
    config: als.ALSConfig,
    item_rating_count: np.ndarray,
    item_rows: list[np.ndarray],
    rating_rows: list[np.ndarray],
    top_n: int,
) -> RefoldedUsers:
    """Fold in each user's complete ratings (item_idx rows, ascending) and rank their top_n items.

    This is the maths of a refresh job without Redis, shared with the streaming evaluation.
    """
    indptr = np.zeros(len(item_rows) + 1, dtype=np.int64)
    np.cumsum([len(row) for row in item_rows], out=indptr[1:])
    item_idx = np.concatenate(item_rows) if item_rows else np.zeros(0, np.int32)
    ratings = np.concatenate(rating_rows) if rating_rows else np.zeros(0, np.float32)

    biases, factors = als.fold_in_many(indptr, item_idx, ratings, model, config)
    list_idx, list_scores = top_n_lists(
        biases, factors, model.item_bias, model.item_factors, item_rows, top_n,
        item_rating_count=item_rating_count,
        support_weight=als.support_weights(
            config.support_weight, config.support_half_count, [len(row) for row in item_rows]
        ),
    )
    return RefoldedUsers(biases, factors, item_rows, list_idx, list_scores)


def refresh_users(
    connection: redis.Redis,
    snapshot: Snapshot,
    users: dict[str, tuple[list[str] | bytes, list[float] | np.ndarray]],
    seq: int | Sequence[int],
    top_n: int,
    newer_only: Sequence[bool] | None = None,
) -> int:
    """Fold in each user's complete ratings and write their factors and top-N list to Redis.

    `seq` is the ingest batch the ratings are complete up to, one for all users or one per user
    in the order of `users`. Item ids come as strings, or as bytes joined by
    store.rating_index.encode_ids (what PendingUser.item_keys gives).

    Where `newer_only[i]` is true, user i's ratings are only those written after the snapshot's
    watermark, and the user's training ratings in the snapshot complete them (a rating given
    here replaces the snapshot's for its item). The snapshot must then store `seen_ratings`.

    Ratings of items the snapshot does not know yet are left out of the fold-in: such items have
    no factors until the next retrain. Returns the number of users whose state was written (a
    state newer than this one, from a later batch or snapshot, is never overwritten).
    """
    model, config = model_of(snapshot)
    user_ids = list(users)
    if newer_only is not None and any(newer_only) and snapshot.seen_ratings is None:
        raise ValueError(
            f"newer_only: snapshot version {snapshot.version} stores no training ratings to add"
        )

    # Every user's known ratings, folded in by a single kernel call.
    item_rows: list[np.ndarray] = []
    rating_rows: list[np.ndarray] = []
    for position, user_id in enumerate(user_ids):
        item_ids, ratings = users[user_id]
        idx = snapshot.item_indices(item_ids)
        known = idx >= 0
        order = np.argsort(idx[known], kind="stable")
        items = idx[known][order].astype(np.int32)
        stars = np.asarray(ratings, dtype=np.float32)[known][order]
        if newer_only is not None and newer_only[position]:
            items, stars = _add_training_ratings(snapshot, user_id, items, stars)
        item_rows.append(items)
        rating_rows.append(stars)

    refolded = refold_users(model, config, snapshot.item_rating_count, item_rows, rating_rows, top_n)
    return write_users(
        connection,
        snapshot,
        user_ids=user_ids,
        seq=seq,
        biases=refolded.biases,
        factors=refolded.factors,
        seen=refolded.seen,
        list_idx=refolded.list_idx,
        list_scores=refolded.list_scores,
    )


def _add_training_ratings(
    snapshot: Snapshot, user_id: str, items: np.ndarray, stars: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the user's training ratings in the snapshot, updated by (items, stars) (sorted)."""
    user_idx = snapshot.user_index(user_id)
    if user_idx is None:
        return items, stars
    start, stop = snapshot.seen_indptr[user_idx], snapshot.seen_indptr[user_idx + 1]
    return merge_sorted_ratings(
        snapshot.seen_indices[start:stop], snapshot.seen_ratings[start:stop], items, stars
    )


@njit(cache=True, nogil=True)
def merge_sorted_ratings(old_items, old_stars, new_items, new_stars):
    """Merge two rating rows sorted by item; where both rate an item, the new rating wins.

    Returns (items int32, stars float32), sorted by item.
    """
    out_items = np.empty(old_items.shape[0] + new_items.shape[0], np.int32)
    out_stars = np.empty(out_items.shape[0], np.float32)
    i = j = n = 0
    while i < old_items.shape[0] or j < new_items.shape[0]:
        if j == new_items.shape[0] or (i < old_items.shape[0] and old_items[i] < new_items[j]):
            out_items[n] = old_items[i]
            out_stars[n] = old_stars[i]
            i += 1
        else:
            if i < old_items.shape[0] and old_items[i] == new_items[j]:
                i += 1
            out_items[n] = new_items[j]
            out_stars[n] = new_stars[j]
            j += 1
        n += 1
    return out_items[:n], out_stars[:n]


def refresh_users_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Refresh the users in `payload`: {"seq": int, "users": {user_id: [[item_id...], [rating...]]}}.

    RefreshEnqueuer enqueues this job only when it runs jobs inline (the embedded demo); workers
    otherwise run refresh_pending_job (worker/drain.py).
    """
    started = time.perf_counter()
    job = get_current_job()
    connection = job.connection
    settings = current_settings()
    snapshot = current_snapshot(settings.snapshots_dir)
    users = {user_id: (rows[0], rows[1]) for user_id, rows in payload["users"].items()}
    written = refresh_users(connection, snapshot, users, int(payload["seq"]), settings.top_n)
    seconds = time.perf_counter() - started
    log.info(
        "refresh finished job=%s users=%d written=%d seq=%d version=%d seconds=%.3f",
        job.id, len(users), written, payload["seq"], snapshot.version, seconds,
    )
    return {"users": len(users), "written": written, "version": snapshot.version}
