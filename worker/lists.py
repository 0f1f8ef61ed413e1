"""Top-N lists for a batch of users, scored against a snapshot's items."""

from __future__ import annotations

import numpy as np

import als
from als.memory import is_immutable
from worker.selection import finish_selection, select_chunk

# Users scored together, and items per matrix product. A block's scores go through in chunks of
# at most 128 x 2,048 float32 (1 MB), which a core's L2 cache can keep from the product that
# writes them to the selection that reads them. For one user, scoring all 87,585 items in one
# product took 4 to 8 ms with OpenBLAS on 2 cores, and chunks of 8,192 items about 0.7 ms.
USERS_PER_BLOCK = 128
ITEMS_PER_CHUNK = 2048
# A catalogue of at most ITEMS_PER_CHUNK items goes in one product whose width is rounded up to
# a multiple of this. OpenBLAS rounds the products of a partial column block differently from a
# full one, so equal item rows must not fall in one: their scores would differ in the last bit.
COLUMN_BLOCK = 64


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
    out. Returns (indices, scores), both of shape (users, min(n, items)), best first with equal
    scores to the lower item index. A row with fewer candidates than `n` is padded with index -1
    and score -inf.

    Every product has the same width, the last chunk padded with zero rows, so items with
    identical rows (cold items with the same genres, for one) get identical scores.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: must be a non-negative integer, got {n!r}")
    n_users = user_factors.shape[0]
    n_items = item_factors.shape[0]
    width = min(n, n_items)
    indices = np.full((n_users, width), -1, dtype=np.int64)
    scores = np.full((n_users, width), -np.inf, dtype=np.float32)
    if width == 0:
        return indices, scores

    _check_shapes(user_bias, user_factors, item_bias, item_factors, item_rating_count, support_weight)
    chunk = chunk_width(n_items)
    table = _ranking_table(item_bias, item_factors, item_rating_count, chunk)
    buffer = np.empty((min(USERS_PER_BLOCK, n_users), chunk), np.float32)
    for start in range(0, n_users, USERS_PER_BLOCK):
        stop = min(start + USERS_PER_BLOCK, n_users)
        weights = support_weight if np.ndim(support_weight) == 0 else support_weight[start:stop]
        user_rows = als.ranking_user_rows(user_bias[start:stop], user_factors[start:stop], weights)
        block_seen = seen[start:stop]
        seen_indptr = np.zeros(stop - start + 1, dtype=np.int64)
        np.cumsum([len(rated) for rated in block_seen], out=seen_indptr[1:])
        seen_indices = np.concatenate(block_seen) if seen_indptr[-1] else np.zeros(0, np.int64)
        if not np.issubdtype(seen_indices.dtype, np.integer):
            raise ValueError(f"seen: item indices must be integers, got dtype {seen_indices.dtype}")
        seen_indices = seen_indices.astype(np.int64)
        sizes = np.zeros(stop - start, np.int64)
        chunk_scores = buffer[: stop - start]
        for first in range(0, n_items, chunk):
            np.matmul(user_rows, table[first : first + chunk].T, out=chunk_scores)
            select_chunk(
                chunk_scores, min(chunk, n_items - first), first, seen_indptr, seen_indices,
                indices[start:stop], scores[start:stop], sizes,
            )
        finish_selection(indices[start:stop], scores[start:stop], sizes)
    return indices, scores


def chunk_width(n_items: int) -> int:
    """Return the items per product: ITEMS_PER_CHUNK, or for a smaller catalogue all of it
    rounded up to COLUMN_BLOCK."""
    if n_items > ITEMS_PER_CHUNK:
        return ITEMS_PER_CHUNK
    return -(-n_items // COLUMN_BLOCK) * COLUMN_BLOCK


def _check_shapes(user_bias, user_factors, item_bias, item_factors, item_rating_count, support_weight):
    """Raise ValueError when the arrays do not fit together, as als.ranking_scores does."""
    n_users, n_items = user_factors.shape[0], item_factors.shape[0]
    if item_bias.shape != (n_items,) or item_rating_count.shape != (n_items,):
        raise ValueError(
            f"item_bias, item_rating_count: must have shape ({n_items},), "
            f"got {item_bias.shape} and {item_rating_count.shape}"
        )
    if user_factors.ndim != 2 or user_factors.shape[1] != item_factors.shape[1] or user_bias.shape != (n_users,):
        raise ValueError(
            f"user_factors, user_bias: must have shapes (B, {item_factors.shape[1]}) and (B,), "
            f"got {user_factors.shape} and {user_bias.shape}"
        )
    weights = np.asarray(support_weight)
    if weights.ndim > 1 or (weights.ndim == 1 and weights.shape[0] != n_users):
        raise ValueError(
            f"support_weight: must be a number or one weight per user ({n_users}), got shape {weights.shape}"
        )


# The ranking table of the last read-only item arrays seen: (item_bias, item_factors,
# item_rating_count, chunk, table). A worker scores many rounds against one memory-mapped
# snapshot, and the table of 87,585 items took about 5 ms to build per round. Writable arrays,
# and read-only views of them, can change in place, so their table is built on every call.
_table_cache: tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray] | None = None


def _ranking_table(
    item_bias: np.ndarray, item_factors: np.ndarray, item_rating_count: np.ndarray, chunk: int
) -> np.ndarray:
    """Return als.ranking_table of the items with zero rows appended up to a multiple of chunk."""
    global _table_cache
    arrays = (item_bias, item_factors, item_rating_count)
    if not all(is_immutable(array) for array in arrays):
        return _padded_table(item_bias, item_factors, item_rating_count, chunk)
    cached = _table_cache
    if cached is None or cached[3] != chunk or any(old is not new for old, new in zip(cached[:3], arrays)):
        table = _padded_table(item_bias, item_factors, item_rating_count, chunk)
        _table_cache = (*arrays, chunk, table)
        return table
    return cached[4]


def _padded_table(item_bias, item_factors, item_rating_count, chunk: int) -> np.ndarray:
    table = als.ranking_table(item_bias, item_factors, als.item_support(item_rating_count))
    n_items = table.shape[0]
    padded = np.zeros((-(-n_items // chunk) * chunk, table.shape[1]), np.float32)
    padded[:n_items] = table
    return padded
