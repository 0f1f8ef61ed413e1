"""Top-N lists for a batch of users, scored against a snapshot's items."""

from __future__ import annotations

import numpy as np

import als

# Users scored per matrix product; 512 users x 87,585 items of float32 is about 180 MB.
USERS_PER_BLOCK = 512


def top_n_lists(
    user_bias: np.ndarray,
    user_factors: np.ndarray,
    item_bias: np.ndarray,
    item_factors: np.ndarray,
    seen: list[np.ndarray],
    n: int,
    *,
    item_rating_count: np.ndarray,
    support_weight: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank every item for each user and keep the best `n` unseen ones.

    The score is als.ranking_scores: b_m + c_n + u_m . v_n + w_m * log(1 + count_n), with count_n
    from item_rating_count and w_m the support_weight, one number for every user or one per user
    (als.support_weights). `seen[i]` contains the item indices user i has rated, which are left
    out. Returns (indices, scores), both of shape (users, min(n, items)); a row with fewer
    candidates than `n` is padded with index -1 and score -inf.
    """
    n_users = user_factors.shape[0]
    n_items = item_factors.shape[0]
    width = min(n, n_items)
    indices = np.full((n_users, width), -1, dtype=np.int64)
    scores = np.full((n_users, width), -np.inf, dtype=np.float32)
    if width == 0:
        return indices, scores

    for start in range(0, n_users, USERS_PER_BLOCK):
        stop = min(start + USERS_PER_BLOCK, n_users)
        weights = support_weight if np.ndim(support_weight) == 0 else support_weight[start:stop]
        block = als.ranking_scores(
            user_bias[start:stop], user_factors[start:stop], item_bias, item_factors,
            item_rating_count, weights,
        )
        for row, user in enumerate(range(start, stop)):
            if len(seen[user]):
                block[row, seen[user]] = -np.inf

        # argpartition finds the best `width` per row in linear time; only those get sorted.
        if width < n_items:
            candidates = np.argpartition(-block, width - 1, axis=1)[:, :width]
        else:
            candidates = np.tile(np.arange(n_items), (stop - start, 1))
        candidate_scores = np.take_along_axis(block, candidates, axis=1)
        for row in range(stop - start):
            # Highest score first, ties to the lower item index.
            order = np.lexsort((candidates[row], -candidate_scores[row]))
            indices[start + row] = candidates[row, order]
            scores[start + row] = candidate_scores[row, order]

    indices[~np.isfinite(scores)] = -1
    return indices, scores
