"""Training loop: alternate the exact block updates, check the values, report each epoch."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from als.config import ALSConfig
from als.errors import NonFiniteError
from als.genres import ItemGenres, item_prior
from als.model import ALSModel, init_model
from als.sparse import RatingMatrix
from als.steps import check_genres, loss_from_squared_error, step_genres, step_items, step_users

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """Progress after one epoch: the full loss, the training RMSE and the epoch's wall time."""

    epoch: int  # 1-based
    loss: float
    rmse: float
    seconds: float


def train(
    matrix: RatingMatrix,
    genres: ItemGenres,
    config: ALSConfig,
    *,
    global_mean: float | None = None,
    callback: Callable[[EpochStats], None] | None = None,
) -> ALSModel:
    """Train the model by ALS for config.epochs epochs and return it.

    global_mean defaults to the mean of the training ratings. callback, if given, receives the
    EpochStats of every epoch (for a progress bar). Raises ValueError on mismatched inputs,
    SolveError when a row's solve fails, and NonFiniteError when an epoch leaves NaN or inf.
    """
    global_mean = _resolve_global_mean(matrix, global_mean)
    if genres.n_items != matrix.n_items:
        raise ValueError(f"genres: must cover {matrix.n_items} items, got {genres.n_items}")
    model = init_model(matrix, genres, config, global_mean)
    check_genres(matrix, model, genres)
    item_counts = matrix.item_counts()

    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        step_users(matrix, model, config)
        # The item step leaves the biases and factors of the epoch's end, because the genre
        # step changes only the priors, so its squared errors are the epoch's.
        squared_error = step_items(matrix, model, genres, config)
        step_genres(model, genres, config, item_counts)
        check_finite(model, epoch)

        loss = loss_from_squared_error(matrix, model, genres, config, squared_error)
        if not math.isfinite(loss):
            raise NonFiniteError(f"loss: not finite after epoch {epoch}, got {loss}")
        rmse = math.sqrt(squared_error / matrix.nnz) if matrix.nnz else 0.0
        stats = EpochStats(epoch, loss, rmse, time.perf_counter() - started)
        log.info(
            "epoch finished epoch=%d loss=%.6g rmse=%.4f seconds=%.3f",
            stats.epoch, stats.loss, stats.rmse, stats.seconds,
        )
        if callback is not None:
            callback(stats)

    place_unrated_items_on_prior(matrix, model, genres, config)
    return model


def place_unrated_items_on_prior(
    matrix: RatingMatrix, model: ALSModel, genres: ItemGenres, config: ALSConfig
) -> None:
    """Set every unrated item to factors g_n and bias 0, its exact minimiser (in place).

    The last genre step of an epoch moves the priors after the item step placed the unrated
    items, so without this a cold item would sit on the previous epoch's prior.
    """
    unrated = np.flatnonzero(matrix.item_counts() == 0)
    if unrated.size == 0:
        return
    model.item_bias[unrated] = 0.0
    if config.use_genres:
        model.item_factors[unrated] = item_prior(model.genre_factors, genres)[unrated]
    else:
        model.item_factors[unrated] = 0.0


def check_finite(model: ALSModel, epoch: int) -> None:
    """Raise NonFiniteError naming the first array and row that contain NaN or inf."""
    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        array = getattr(model, name)
        finite = np.isfinite(array)
        if finite.all():
            continue
        bad_rows = np.flatnonzero(~finite.reshape(array.shape[0], -1).all(axis=1))
        raise NonFiniteError(
            f"{name}: row {int(bad_rows[0])} is not finite after epoch {epoch} "
            f"({bad_rows.size} rows affected), so try larger reg_factors and reg_bias"
        )


def _resolve_global_mean(matrix: RatingMatrix, global_mean: float | None) -> float:
    if global_mean is None:
        if matrix.nnz == 0:
            raise ValueError("matrix: contains no ratings, so global_mean must be given")
        return float(matrix.user_ratings.astype(np.float64).mean())
    if not math.isfinite(global_mean):
        raise ValueError(f"global_mean: must be finite, got {global_mean}")
    return float(global_mean)
