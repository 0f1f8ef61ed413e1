"""Raw predictions, the ranking score and top-N selection.

A predicted rating is global_mean + b_m + c_n + u_m . v_n. The ranking score adds to that
(without the global mean, the same for every item) a reward for the item's support:

    score(m, n) = b_m + c_n + u_m . v_n + w_m * log(1 + count_n)

where count_n is the number of training ratings of item n. An explicit-rating model predicts
how much a user would like an item if they watched it, and ranks an item that two people rated
five stars above one that two hundred rated four and a half; the support term estimates how likely
the item is to be watched at all. Predicted ratings never include it.

The weight w_m grows with the number of ratings r_m that user m has given:

    w_m = support_weight * r_m / (r_m + support_half_count)

With support_half_count = 0 every user gets support_weight. Otherwise a user with a long history,
whose factors are well determined, gets nearly the full weight. A visitor with one or two ratings
gets little, so their ranking follows those ratings. Under a single weight, the most-rated
films would fill the top of every such visitor's list. A user with no ratings has no factors and
gets w_m = 0, a ranking by item bias alone: the films rated highest once their bias is shrunk
towards zero by reg_bias.
"""

from __future__ import annotations

import numpy as np

from als.model import ALSModel

UNKNOWN = -1
"""Index that stands for a user or item the model has no row for."""


def predict(model: ALSModel, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
    """Return float64 global_mean + b_m + c_n + u_m . v_n for each (user, item) pair, unclipped.

    An index of -1 means unknown: an unknown user contributes b_m = 0 and u_m = 0, an unknown
    item c_n = 0 and v_n = 0 (a cold item with genres should be passed by its own index, since
    its model row already contains the genre prior). Raises ValueError for other indices outside
    the model or for lengths that differ.
    """
    users = _check_indices("user_idx", user_idx, model.n_users)
    items = _check_indices("item_idx", item_idx, model.n_items)
    if users.shape != items.shape:
        raise ValueError(f"user_idx, item_idx: must have equal lengths, got {users.size}, {items.size}")

    known_user = users >= 0
    known_item = items >= 0
    # Unknown rows read row 0 and are then masked to zero, which avoids a copy per mask.
    safe_users = np.where(known_user, users, 0)
    safe_items = np.where(known_item, items, 0)

    scores = np.full(users.shape, model.global_mean, np.float64)
    if model.n_users:
        scores += np.where(known_user, model.user_bias[safe_users], 0.0)
    if model.n_items:
        scores += np.where(known_item, model.item_bias[safe_items], 0.0)
    both = known_user & known_item
    if both.any():
        user_rows = model.user_factors[users[both]].astype(np.float64)
        item_rows = model.item_factors[items[both]].astype(np.float64)
        scores[both] += np.einsum("ij,ij->i", user_rows, item_rows)
    return scores


def support_weights(support_weight: float, support_half_count: float, user_rating_count) -> np.ndarray:
    """Return w_m = support_weight * r_m / (r_m + support_half_count) for each user's count r_m.

    `user_rating_count` is a number or an array of counts; the result is float64 of its shape.
    A half count of 0 gives every user the full weight, except that a count of 0 gives 0 whenever
    support_half_count is positive. Raises ValueError for a negative count.
    """
    counts = np.asarray(user_rating_count, dtype=np.float64)
    if counts.size and counts.min() < 0:
        raise ValueError(f"user_rating_count: must be >= 0, got {counts.min():g}")
    if support_half_count == 0.0:
        return np.full(counts.shape, float(support_weight))
    return support_weight * counts / (counts + support_half_count)


def item_support(item_rating_count: np.ndarray) -> np.ndarray:
    """Return log(1 + count_n) as float64: the support of every item, before a user's weight."""
    return np.log1p(np.asarray(item_rating_count, np.float64))


def ranking_scores(
    user_bias: float | np.ndarray,
    user_factors: np.ndarray,
    item_bias: np.ndarray,
    item_factors: np.ndarray,
    item_rating_count: np.ndarray,
    support_weight: float | np.ndarray,
    *,
    support: np.ndarray | None = None,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Return the ranking score b_m + c_n + u_m . v_n + w_m * log(1 + count_n).

    For one user (user_factors of shape (K,), user_bias and support_weight numbers) the result is
    float64 (N,). For a block of users (user_factors (B, K), user_bias (B,), support_weight a
    number or (B,) per-user weights from support_weights) it is float32 (B, N), to keep a block of
    a large catalogue in memory. `support` is item_support(item_rating_count), for callers that
    serve many queries and compute it once, and `table` is ranking_table(...) for callers that
    score many blocks. Raises ValueError when the shapes do not fit.
    """
    n_items = item_factors.shape[0]
    if item_bias.shape != (n_items,) or item_rating_count.shape != (n_items,):
        raise ValueError(
            f"item_bias, item_rating_count: must have shape ({n_items},), "
            f"got {item_bias.shape} and {item_rating_count.shape}"
        )
    if user_factors.ndim not in (1, 2) or user_factors.shape[-1] != item_factors.shape[1]:
        raise ValueError(
            f"user_factors: must have shape (K,) or (B, K) with K={item_factors.shape[1]}, "
            f"got {user_factors.shape}"
        )
    weights = np.asarray(support_weight, np.float64)
    n_users = 1 if user_factors.ndim == 1 else user_factors.shape[0]
    if weights.ndim > 1 or (weights.ndim == 1 and (user_factors.ndim == 1 or weights.shape[0] != n_users)):
        raise ValueError(
            f"support_weight: must be a number or one weight per user ({n_users}), got shape {weights.shape}"
        )

    if support is None:
        support = item_support(item_rating_count)
    # The dot products run in float32, the precision of the stored factors: converting the item
    # factors to float64 would copy the whole table on every call.
    item_factors = np.asarray(item_factors, np.float32)
    if user_factors.ndim == 1:
        scores = (item_factors @ np.asarray(user_factors, np.float32)).astype(np.float64)
        scores += item_bias
        if weights != 0.0:
            scores += float(weights) * support
        scores += float(user_bias)
        return scores
    if table is None:
        table = ranking_table(item_bias, item_factors, support)
    return ranking_user_rows(user_bias, user_factors, weights) @ table.T


def ranking_user_rows(user_bias: np.ndarray, user_factors: np.ndarray, support_weight) -> np.ndarray:
    """Return the float32 (B, K + 3) rows (u_m, 1, w_m, b_m) whose product with ranking_table rows
    (v_n, c_n, support_n, 1) is the ranking score: one matrix product adds the biases and the
    support term too.
    """
    n_users, k = user_factors.shape
    users = np.empty((n_users, k + 3), np.float32)
    users[:, :k] = user_factors
    users[:, k] = 1.0
    users[:, k + 1] = support_weight
    users[:, k + 2] = user_bias
    return users


def ranking_table(item_bias: np.ndarray, item_factors: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Return the float32 (N, K + 3) rows (v_n, c_n, support_n, 1) that score a block of users.

    `support` is item_support(item_rating_count). ranking_scores builds the table for each block
    when it is not given, which copies the item factors once per call.
    """
    n_items, k = item_factors.shape
    table = np.empty((n_items, k + 3), np.float32)
    table[:, :k] = item_factors
    table[:, k] = item_bias
    table[:, k + 1] = support
    table[:, k + 2] = 1.0
    return table


def top_n(scores: np.ndarray, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Return the indices of the n highest scores, best first, as int64.

    Equal scores are ordered by lower index first. Indices in exclude are skipped. Fewer than n
    indices come back when fewer candidates remain. Uses argpartition, so the cost is linear in
    len(scores) plus n log n. Raises ValueError for NaN scores, a negative n or an exclude index
    outside the scores.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores: must be 1-D, got shape {scores.shape}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: must be a non-negative integer, got {n!r}")
    if np.isnan(scores).any():
        raise ValueError(f"scores: must not contain NaN, got one at index {int(np.flatnonzero(np.isnan(scores))[0])}")

    if exclude is None or len(exclude) == 0:
        candidates = np.arange(scores.shape[0], dtype=np.int64)
        candidate_scores = scores
    else:
        excluded = np.asarray(exclude)
        if excluded.ndim != 1 or not np.issubdtype(excluded.dtype, np.integer):
            raise ValueError(f"exclude: must be a 1-D integer array, got dtype {excluded.dtype} shape {excluded.shape}")
        if excluded.min() < 0 or excluded.max() >= scores.shape[0]:
            bad = excluded.min() if excluded.min() < 0 else excluded.max()
            raise ValueError(f"exclude: must be in [0, {scores.shape[0]}), got {bad}")
        keep = np.ones(scores.shape[0], bool)
        keep[excluded] = False
        candidates = np.flatnonzero(keep)
        candidate_scores = scores[candidates]

    count = min(int(n), candidates.shape[0])
    if count == 0:
        return np.zeros(0, np.int64)

    if count < candidates.shape[0]:
        # argpartition breaks ties at the cut arbitrarily, so take everything above the n-th
        # best score and then the lowest indices among those equal to it.
        nth = np.argpartition(-candidate_scores, count - 1)[count - 1]
        threshold = candidate_scores[nth]
        above = np.flatnonzero(candidate_scores > threshold)
        tied = np.flatnonzero(candidate_scores == threshold)[: count - above.shape[0]]
        chosen = np.concatenate((above, tied))
    else:
        chosen = np.arange(candidates.shape[0])

    # Sort by descending score, then ascending index.
    order = np.lexsort((chosen, -candidate_scores[chosen]))
    return candidates[chosen[order]].astype(np.int64)


def _check_indices(name: str, values: np.ndarray, size: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: must hold integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < UNKNOWN:
            raise ValueError(f"{name}: must be -1 (unknown) or in [0, {size}), got {low}")
        if high >= size:
            raise ValueError(f"{name}: must be -1 (unknown) or in [0, {size}), got {high}")
    return array
