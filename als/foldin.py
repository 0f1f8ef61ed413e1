"""Fold-in: the best bias and factors of users from their ratings, with the items fixed.

This is the user half-step of training for just those users, so a folded-in user equals the
row that step_users would produce from the same ratings.
"""

from __future__ import annotations

import numpy as np

from als.config import ALSConfig
from als.kernels import pad_factors
from als.memory import is_immutable
from als.model import ALSModel
from als.sparse import check_index_array
from als.steps import no_prior, solve_side


def fold_in(
    item_idx: np.ndarray, ratings: np.ndarray, model: ALSModel, config: ALSConfig
) -> tuple[float, np.ndarray]:
    """Return one user's (bias, factors float32 (K,)) given their rated items and ratings.

    A user with no ratings gets bias 0 and zero factors. Raises ValueError naming the value when
    an item index is outside [0, n_items), a rating is not finite or the lengths differ, and
    SolveError when the solve fails.
    """
    item_idx = check_index_array("item_idx", item_idx, model.n_items)
    indptr = np.array([0, item_idx.shape[0]], np.int64)
    biases, factors = fold_in_many(indptr, item_idx, ratings, model, config)
    return float(biases[0]), factors[0]


def fold_in_many(
    indptr: np.ndarray,
    item_idx: np.ndarray,
    ratings: np.ndarray,
    model: ALSModel,
    config: ALSConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Fold in a batch of users in one parallel call.

    The users' ratings come as CSR: user b rated item_idx[indptr[b]:indptr[b+1]] with the
    matching ratings. Returns (biases float32 (B,), factors float32 (B, K)). Raises ValueError
    for malformed input (naming the value) and SolveError naming the failed user's position.
    """
    if model.factors != config.factors:
        raise ValueError(f"factors: config has {config.factors} but the model has {model.factors}")
    indptr = _check_indptr(indptr)
    columns = check_index_array("item_idx", item_idx, model.n_items).astype(np.int32)
    values = np.asarray(ratings)
    if values.ndim != 1 or values.shape[0] != columns.shape[0]:
        raise ValueError(
            f"ratings: must be 1-D with the length of item_idx ({columns.shape[0]}), "
            f"got shape {values.shape}"
        )
    if int(indptr[-1]) != columns.shape[0]:
        raise ValueError(f"indptr: last entry must equal len(item_idx) {columns.shape[0]}, got {indptr[-1]}")
    values = values.astype(np.float32)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"ratings: must be finite, got {values[bad]} at position {bad}")

    n_users = indptr.shape[0] - 1
    biases = np.zeros(n_users, np.float32)
    factors = np.zeros((n_users, model.factors), np.float32)
    solve_side(
        "fold-in user",
        indptr,
        columns,
        values,
        model.item_factors,
        model.item_bias,
        model.global_mean,
        no_prior(model.factors),
        config,
        factors,
        biases,
        padded=_padded_item_table(model.item_factors, model.item_bias),
    )
    return biases, factors


# The padded rows of the last read-only item tables folded into: (factors, bias, padded rows).
# A refresh worker folds many batches into one memory-mapped snapshot, and padding its 87,585
# items took about 10 ms per call, more than folding in 150 users. Writable tables (training
# and evaluation) can change in place, and so can read-only views of them, so any table whose
# memory is not immutable (als.memory.is_immutable) is padded on every call.
_padded_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def _padded_item_table(item_factors: np.ndarray, item_bias: np.ndarray) -> np.ndarray:
    global _padded_cache
    if not (is_immutable(item_factors) and is_immutable(item_bias)):
        return pad_factors(item_factors, item_bias)
    cache = _padded_cache
    if cache is None or cache[0] is not item_factors or cache[1] is not item_bias:
        cache = _padded_cache = (item_factors, item_bias, pad_factors(item_factors, item_bias))
    return cache[2]


def _check_indptr(indptr: np.ndarray) -> np.ndarray:
    array = np.asarray(indptr)
    if array.ndim != 1 or array.shape[0] < 1:
        raise ValueError(f"indptr: must be 1-D with at least one entry, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indptr: must hold integers, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array[0] != 0:
        raise ValueError(f"indptr: must start at 0, got {array[0]}")
    steps = np.diff(array)
    if (steps < 0).any():
        position = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(f"indptr: must be non-decreasing, got {array[position]} then {array[position + 1]}")
    return array
