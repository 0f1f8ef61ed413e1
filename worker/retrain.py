"""The full retrain: read every rating, train, publish the next snapshot, rewrite all lists."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np
import redis
from rq import get_current_job
from tqdm import tqdm

import als
from store import keys
from store.database import Database, RatingsData, export_items_path, read_export
from store.errors import DatabaseLockedError
from store.exports import request_export, request_refold
from store.settings import Settings
from worker.context import current_settings
from store.snapshots import SnapshotData, SnapshotStore
from store.user_state import write_users
from worker.lists import top_n_lists

log = logging.getLogger(__name__)

# Seconds a retrain waits for the ingest consumer to export the ratings.
EXPORT_TIMEOUT_SECONDS = 600
# Users whose lists are written per Redis pipeline after a retrain.
USERS_PER_WRITE = 2000

Progress = Callable[[str, dict[str, Any]], None]


def load_ratings(settings: Settings, connection: redis.Redis | None) -> RatingsData:
    """Read every rating, from the DuckDB file when no process has it open, else through an export.

    While the ingest consumer runs it owns the file, so the retrain requests a Parquet export from it.
    """
    try:
        with Database(settings.database_path, read_only=True) as database:
            return database.ratings_arrays()
    except DatabaseLockedError:
        if connection is None:
            raise
        log.info("database held by the ingest consumer, requesting an export")
    path, _, generation = request_export(connection, timeout=EXPORT_TIMEOUT_SECONDS)
    try:
        return read_export(path, generation)
    finally:
        # The arrays are in memory now, and every retrain requests a fresh export.
        for exported in (path, export_items_path(path)):
            exported.unlink(missing_ok=True)
        log.info("export removed path=%s", path)


def train_model(data: RatingsData, config: als.ALSConfig, progress: Progress) -> als.ALSModel:
    matrix = als.build_rating_matrix(
        data.user_idx, data.item_idx, data.rating, data.n_users, data.n_items
    )
    genres = als.ItemGenres(data.item_genres_indptr, data.item_genres_indices, data.n_genres)

    # The bar shows on a terminal only (disable=None); workers report through `progress` instead.
    with tqdm(total=config.epochs, desc="training", unit="epoch", disable=None) as bar:

        def on_epoch(stats: als.EpochStats) -> None:
            bar.update(1)
            bar.set_postfix(rmse=f"{stats.rmse:.4f}")
            progress("training", {"epoch": stats.epoch, "epochs": config.epochs, "rmse": stats.rmse})

        return als.train(matrix, genres, config, callback=on_epoch)


def training_rmse(model: als.ALSModel, data: RatingsData, settings: Settings) -> float:
    """Return the RMSE of the predictions clipped to the rating scale, over the training ratings."""
    return als.model_rmse(
        model, data.user_idx, data.item_idx, data.rating, settings.rating_min, settings.rating_max
    )


def snapshot_data(
    data: RatingsData, model: als.ALSModel, config: als.ALSConfig, metrics: dict[str, float],
    settings: Settings,
) -> SnapshotData:
    """Everything a version holds: the model, the id maps, and what each user rated in training."""
    seen_indptr = np.searchsorted(data.user_idx, np.arange(data.n_users + 1)).astype(np.int64)
    return SnapshotData(
        user_factors=model.user_factors, user_bias=model.user_bias,
        item_factors=model.item_factors, item_bias=model.item_bias,
        genre_factors=model.genre_factors,
        user_ids=data.user_ids, item_ids=data.item_ids, item_titles=data.item_titles,
        genre_names=data.genre_names,
        item_genres_indptr=data.item_genres_indptr, item_genres_indices=data.item_genres_indices,
        seen_indptr=seen_indptr, seen_indices=data.item_idx.astype(np.int32),
        seen_ratings=data.rating.astype(np.float32, copy=False),
        item_rating_count=np.bincount(data.item_idx, minlength=data.n_items).astype(np.int32),
        global_mean=float(model.global_mean),
        rating_min=settings.rating_min, rating_max=settings.rating_max,
        watermark=int(data.watermark),
        ratings_generation=data.generation,
        hyperparameters=config.to_dict(), metrics=metrics,
    )


def publish_snapshot(
    settings: Settings, data: RatingsData, model: als.ALSModel, config: als.ALSConfig,
    metrics: dict[str, float],
) -> int:
    snapshot = snapshot_data(data, model, config, metrics, settings)
    return SnapshotStore(settings.snapshots_dir).publish(snapshot)


def write_all_lists(
    connection: redis.Redis, settings: Settings, version: int, progress: Progress
) -> int:
    """Write every snapshot user's factors and top-N list, guarded by (version, watermark)."""
    snapshot = SnapshotStore(settings.snapshots_dir).open(version)
    config = als.ALSConfig.from_stored(snapshot.hyperparameters)
    n_users = len(snapshot.user_ids)
    written = 0
    for start in range(0, n_users, USERS_PER_WRITE):
        stop = min(start + USERS_PER_WRITE, n_users)
        seen = [snapshot.seen_items(user_idx) for user_idx in range(start, stop)]
        list_idx, list_scores = top_n_lists(
            snapshot.user_bias[start:stop], snapshot.user_factors[start:stop],
            snapshot.item_bias, snapshot.item_factors, seen, settings.top_n,
            item_rating_count=snapshot.item_rating_count,
            support_weight=als.support_weights(
                config.support_weight, config.support_half_count, np.diff(snapshot.seen_indptr[start:stop + 1])
            ),
        )
        written += write_users(
            connection, snapshot,
            user_ids=[str(u) for u in snapshot.user_ids[start:stop]],
            seq=snapshot.watermark,
            biases=np.asarray(snapshot.user_bias[start:stop]),
            factors=np.asarray(snapshot.user_factors[start:stop]),
            seen=seen, list_idx=list_idx, list_scores=list_scores,
        )
        progress("writing lists", {"users": stop, "of": n_users})
    return written


def finish_publication(
    settings: Settings, connection: redis.Redis, version: int, progress: Progress | None = None
) -> int:
    """Announce a published version in Redis, request the refold, then rewrite every list.

    The refold goes first: refreshes it causes carry a later seq than the version's watermark,
    so the guarded list writes below never overwrite them. Every step may be repeated, which is
    how a worker that died after publishing finishes the job on restart. Returns the number of
    user states written.
    """
    progress = progress or (lambda stage, fields: None)
    snapshot = SnapshotStore(settings.snapshots_dir).open(version)
    raise_version(connection, keys.SNAPSHOT_CURRENT, version)
    request_refold(connection, snapshot.watermark)
    written = write_all_lists(connection, settings, version, progress)
    raise_version(connection, keys.SNAPSHOT_LISTS_WRITTEN, version)
    log.info("publication finished version=%d users_written=%d", version, written)
    return written


# Sets KEYS[1] to ARGV[1] unless it already contains a higher number, so two publications that
# finish in the wrong order leave the higher version.
_RAISE_VERSION_LUA = """
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) >= stored then
  redis.call('SET', KEYS[1], ARGV[1])
end
return stored
"""


def raise_version(connection: redis.Redis, key: str, version: int) -> None:
    connection.register_script(_RAISE_VERSION_LUA)(keys=[key], args=[version])


def resume_publication(settings: Settings, connection: redis.Redis) -> int | None:
    """Finish the Redis side of the current version when an earlier worker died before it did.

    Returns the version finished, or None when there was nothing to do.
    """
    current = SnapshotStore(settings.snapshots_dir).current_version()
    if current is None:
        return None
    finished = connection.get(keys.SNAPSHOT_LISTS_WRITTEN)
    if finished is not None and int(finished) > current:
        # The version key only rises, so writing the lists again would not change it, and the
        # check at every maintenance pass would rewrite them all each time.
        log.warning(
            "lists in Redis belong to version=%d, newer than the current snapshot version=%d; "
            "restore the matching snapshots, or delete the streamrec keys to rewrite the lists",
            int(finished), current,
        )
        return None
    if finished is not None and int(finished) == current:
        return None
    log.warning(
        "publication unfinished, resuming version=%d lists_written_for=%s",
        current, int(finished) if finished is not None else None,
    )
    finish_publication(settings, connection, current)
    return current


def run_retrain(
    settings: Settings,
    connection: redis.Redis | None,
    config: als.ALSConfig,
    *,
    data: RatingsData | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on all ratings and publish the next version; see the module docstring for the steps.

    `data` skips reading the ratings (the embedded demo passes what its own database holds).
    Ratings that arrive during the retrain are refolded by the ingest consumer afterwards, on
    request, because they are newer than the snapshot's watermark.
    """
    progress = progress or (lambda stage, fields: None)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    progress("reading ratings", {})
    if data is None:
        data = load_ratings(settings, connection)
    timings["read_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    model = train_model(data, config, progress)
    timings["train_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    metrics = {"train_rmse": training_rmse(model, data, settings)}
    timings["metrics_seconds"] = time.perf_counter() - started
    metrics.update(timings)

    started = time.perf_counter()
    progress("publishing", {})
    version = publish_snapshot(settings, data, model, config, metrics)
    timings["publish_seconds"] = time.perf_counter() - started

    written = 0
    if connection is not None:
        started = time.perf_counter()
        written = finish_publication(settings, connection, version, progress)
        timings["lists_seconds"] = time.perf_counter() - started

    log.info(
        "retrain finished version=%d ratings=%d users=%d items=%d watermark=%d %s",
        version, len(data.rating), data.n_users, data.n_items, data.watermark,
        " ".join(f"{name}={value:.2f}" for name, value in timings.items()),
    )
    return {"version": version, "ratings": int(len(data.rating)), "lists_written": written,
            "watermark": int(data.watermark), **metrics, **timings}


def retrain_job(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point; `payload` is {"overrides": {hyperparameter: value}, "reason": str}."""
    job = get_current_job()
    settings = current_settings()
    config = dataclasses.replace(als.ALSConfig(), **payload.get("overrides", {}))
    log.info("retrain started job=%s reason=%s config=%s", job.id, payload.get("reason"), config.to_dict())

    def progress(stage: str, fields: dict[str, Any]) -> None:
        # updated_at (seconds since the epoch) lets status show a job that stopped moving.
        job.meta["progress"] = {"stage": stage, **fields, "updated_at": round(time.time(), 1)}
        job.save_meta()

    return run_retrain(settings, job.connection, config, progress=progress)
