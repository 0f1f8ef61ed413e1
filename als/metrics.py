"""Accuracy and ranking metrics, plain numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Return the root mean squared error. Raises ValueError for empty or unequal inputs."""
    errors = _errors(pred, truth)
    return float(np.sqrt(np.mean(errors * errors)))


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
