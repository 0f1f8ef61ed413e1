"""The evaluation protocol: rating error over every test row, and top-N ranking per test user.

Everything here works on dense indices. A test row whose user or item does not occur in training
carries index -1 and is still predicted by the model's fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import als

# A test rating at or above this counts as relevant for the top-N metrics.
RELEVANT_MIN_RATING = 4.0


@dataclass
class TopNCase:
    """One test user's ranking problem."""

    user_idx: int               # -1 when the user has no training ratings
    train_items: np.ndarray     # sorted item indices the user rated in training (excluded)
    relevant_items: np.ndarray  # item indices of test ratings >= 4.0; -1 for items unknown to training


def rating_errors(predictions: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """RMSE and MAE over all rows, and RMSE over the rows whose user and item were both trained."""
    result = {
        "rmse": als.rmse(predictions, truth),
        "mae": als.mae(predictions, truth),
        "rmse_known": als.rmse(predictions[known], truth[known]) if known.any() else float("nan"),
    }
    return result


def rank_items(scores: np.ndarray, candidates: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """The k best candidate items by score, ties to the lower item index, skipping `exclude`.

    `candidates` is a boolean mask over items; item indices are in the order of the item ids, so
    a tie goes to the lower item id.
    """
    masked = np.where(candidates, scores, -np.inf)
    if len(exclude):
        masked[exclude] = -np.inf
    return als.top_n(masked, k)[: int(np.isfinite(masked).sum())]


def top_n_metrics(
    cases: list[TopNCase],
    score_user,
    candidates: np.ndarray,
    k: int = 10,
) -> dict[str, float]:
    """Recall@k, NDCG@k (binary gain) and catalogue coverage@k averaged over the cases.

    `score_user(user_idx)` returns the unclipped score of every item. Relevant items unknown to
    training stay in the recall denominator, so no model can reach them.
    """
    ranked_lists = []
    relevant_lists = []
    shown = np.zeros(len(candidates), dtype=bool)
    for case in cases:
        ranked = rank_items(score_user(case.user_idx), candidates, case.train_items, k)
        shown[ranked] = True
        ranked_lists.append(ranked)
        relevant_lists.append(case.relevant_items)
    return {
        f"recall_at_{k}": als.recall_at_k(ranked_lists, relevant_lists, k),
        f"ndcg_at_{k}": als.ndcg_at_k(ranked_lists, relevant_lists, k),
        f"coverage_at_{k}": float(shown.sum() / max(1, candidates.sum())),
    }
