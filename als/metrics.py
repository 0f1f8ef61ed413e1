"""Accuracy and ranking metrics, in numpy apart from the model's RMSE over all its ratings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from als.kernels import clipped_squared_error_sum
from als.model import ALSModel
from als.sparse import check_index_array


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Return the root mean squared error. Raises ValueError for empty or unequal inputs."""
    errors = _errors(pred, truth)
    return float(np.sqrt(np.mean(errors * errors)))


def model_rmse(
    model: ALSModel,
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    rating_min: float,
    rating_max: float,
) -> float:
    """Return the RMSE of the model's predictions, clipped to [rating_min, rating_max].

    Equals rmse(clip(predict(...)), ratings) without a float64 copy of a factor row per rating,
    so it fits the memory of a full retrain. Returns 0 for no ratings. Raises ValueError naming
    the argument when an index is outside the model, the lengths differ or the bounds are
    reversed.
    """
    users = check_index_array("user_idx", user_idx, model.n_users, np.int32)
    items = check_index_array("item_idx", item_idx, model.n_items, np.int32)
    values = np.asarray(ratings)
    if not (users.shape[0] == items.shape[0] == values.shape[0]) or values.ndim != 1:
        raise ValueError(
            f"user_idx, item_idx, ratings: must be 1-D with equal lengths, "
            f"got {users.shape[0]}, {items.shape[0]}, {values.shape}"
        )
    if not rating_min <= rating_max:
        raise ValueError(f"rating_min, rating_max: must be ordered, got {rating_min}, {rating_max}")
    if values.shape[0] == 0:
        return 0.0
    squared_error = clipped_squared_error_sum(
        users, items, values, model.user_factors, model.user_bias, model.item_factors,
        model.item_bias, float(model.global_mean), float(rating_min), float(rating_max),
    )
    return float(np.sqrt(squared_error / values.shape[0]))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Return the mean absolute error. Raises ValueError for empty or unequal inputs."""
    return float(np.mean(np.abs(_errors(pred, truth))))


def recall_at_k(
    ranked: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int = 10
) -> float:
    """Return the mean over users of |top k of ranked ∩ relevant| / |relevant|.

    Users with no relevant items are left out of the mean. Raises ValueError when the lists
    differ in length, k < 1, or no user has a relevant item.
    """
    scores = [
        _hits(user_ranked, user_relevant, k).sum() / len(user_relevant)
        for user_ranked, user_relevant in _users_with_relevant(ranked, relevant, k)
    ]
    return float(np.mean(scores))


def ndcg_at_k(ranked: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int = 10) -> float:
    """Return the mean over users of NDCG@k with binary gains.

    DCG = sum over the top k positions i (from 0) of hit_i / log2(i + 2), and the ideal DCG puts
    min(k, |relevant|) hits first. Users with no relevant items are left out of the mean.
    Raises ValueError like recall_at_k.
    """
    discounts = 1.0 / np.log2(np.arange(k) + 2.0) if k >= 1 else np.zeros(0)
    scores = []
    for user_ranked, user_relevant in _users_with_relevant(ranked, relevant, k):
        hits = _hits(user_ranked, user_relevant, k)
        dcg = float(hits @ discounts[: hits.shape[0]])
        ideal = float(discounts[: min(k, len(user_relevant))].sum())
        scores.append(dcg / ideal)
    return float(np.mean(scores))


def _errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    predicted = np.asarray(pred, np.float64)
    actual = np.asarray(truth, np.float64)
    if predicted.shape != actual.shape:
        raise ValueError(f"pred, truth: must have equal shapes, got {predicted.shape}, {actual.shape}")
    if predicted.size == 0:
        raise ValueError("pred, truth: must not be empty")
    return predicted - actual


def _users_with_relevant(
    ranked: Sequence[np.ndarray], relevant: Sequence[np.ndarray], k: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: must be an integer >= 1, got {k!r}")
    if len(ranked) != len(relevant):
        raise ValueError(f"ranked, relevant: must have one entry per user, got {len(ranked)}, {len(relevant)}")
    pairs = [(np.asarray(r), np.asarray(rel)) for r, rel in zip(ranked, relevant) if len(rel) > 0]
    if not pairs:
        raise ValueError("relevant: every user's list is empty, so the metric is undefined")
    return pairs


def _hits(user_ranked: np.ndarray, user_relevant: np.ndarray, k: int) -> np.ndarray:
    """Return float64 1/0 per position of the top k ranked items: whether the item is relevant."""
    return np.isin(user_ranked[:k], user_relevant).astype(np.float64)
