"""Ratings as two CSR layouts (rows by user and rows by item), built once in linear time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

# Dense indices are stored as int32, so a dimension must stay below 2**31.
MAX_INDEX = np.iinfo(np.int32).max


@dataclass
class RatingMatrix:
    """Explicit ratings in CSR by user and CSR by item.

    Within a user's row the item indices are ascending, and within an item's row the user
    indices are ascending.
    """

    n_users: int
    n_items: int
    user_indptr: np.ndarray  # int64 (n_users + 1,)
    user_items: np.ndarray  # int32 (nnz,), the item of each rating in user order
    user_ratings: np.ndarray  # float32 (nnz,)
    item_indptr: np.ndarray  # int64 (n_items + 1,)
    item_users: np.ndarray  # int32 (nnz,), the user of each rating in item order
    item_ratings: np.ndarray  # float32 (nnz,)

    @property
    def nnz(self) -> int:
        """Number of stored ratings."""
        return int(self.user_items.shape[0])

    def user_counts(self) -> np.ndarray:
        """Return the number of ratings of each user (int64, n_users)."""
        return np.diff(self.user_indptr)

    def item_counts(self) -> np.ndarray:
        """Return the number of ratings of each item (int64, n_items)."""
        return np.diff(self.item_indptr)


def build_rating_matrix(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    rating: np.ndarray,
    n_users: int,
    n_items: int,
) -> RatingMatrix:
    """Build both CSR layouts from coordinate triples with three counting-sort passes.

    Raises ValueError naming the argument when lengths differ, an index is outside
    [0, n_users) or [0, n_items), a rating is not finite, or a (user, item) pair repeats.
    """
    n_users = check_dimension("n_users", n_users)
    n_items = check_dimension("n_items", n_items)
    # int32 indices: at 32M ratings each int64 copy would cost another 256 MB of peak memory.
    users = check_index_array("user_idx", user_idx, n_users, np.int32)
    items = check_index_array("item_idx", item_idx, n_items, np.int32)
    raw_values = np.asarray(rating)
    if raw_values.ndim != 1:
        raise ValueError(f"rating: must be 1-D, got shape {raw_values.shape}")
    if not (users.shape[0] == items.shape[0] == raw_values.shape[0]):
        raise ValueError(
            f"user_idx, item_idx, rating: must have equal lengths, "
            f"got {users.shape[0]}, {items.shape[0]}, {raw_values.shape[0]}"
        )
    values = raw_values.astype(np.float32)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(f"rating: must be finite, got {raw_values[bad]} at position {bad}")

    # Grouping by item, then by user, then by item again (each pass stable) leaves every
    # user row sorted by item and every item row sorted by user.
    by_item = np.arange(users.shape[0], dtype=np.int64)
    _, by_item = _group_by_key(items, n_items, by_item)
    user_indptr, by_user = _group_by_key(users, n_users, by_item)
    item_indptr, by_item = _group_by_key(items, n_items, by_user)

    user_items = items[by_user]
    duplicate = _first_duplicate(user_indptr, user_items)
    if duplicate >= 0:
        position = int(by_user[duplicate])
        raise ValueError(
            f"user_idx, item_idx: pair ({users[position]}, {items[position]}) occurs more than once"
        )

    return RatingMatrix(
        n_users=n_users,
        n_items=n_items,
        user_indptr=user_indptr,
        user_items=user_items,
        user_ratings=np.ascontiguousarray(values[by_user]),
        item_indptr=item_indptr,
        item_users=users[by_item],
        item_ratings=np.ascontiguousarray(values[by_item]),
    )


def check_dimension(name: str, value: object) -> int:
    """Return value as an int, or raise ValueError unless it is a count in [0, 2**31 - 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if not 0 <= value <= MAX_INDEX:
        raise ValueError(f"{name}: must be between 0 and {MAX_INDEX}, got {value}")
    return int(value)


def check_index_array(name: str, values: np.ndarray, size: int, dtype: type = np.int64) -> np.ndarray:
    """Return values as `dtype`, or raise ValueError unless they are 1-D integers in [0, size).

    int32 is safe for any size up to MAX_INDEX; it halves the memory of index arrays.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: must hold integers, got dtype {array.dtype}")
    if array.size:
        # Checked before the conversion, which could wrap large values into range.
        low = int(array.min())
        high = int(array.max())
        if low < 0:
            raise ValueError(f"{name}: must be in [0, {size}), got {low}")
        if high >= size:
            raise ValueError(f"{name}: must be in [0, {size}), got {high}")
    return array.astype(dtype, copy=False)


@njit(cache=True, nogil=True)
def _group_by_key(keys, n_keys, visit):
    """Counting sort: return (indptr, order) listing the positions in `visit` grouped by key.

    keys: int64 (n,), one key in [0, n_keys) per position. visit: int64 (n,), a permutation of
    the positions, whose order is kept within each key (the sort is stable).
    """
    indptr = np.zeros(n_keys + 1, np.int64)
    for position in range(keys.shape[0]):
        indptr[keys[position] + 1] += 1
    for key in range(n_keys):
        indptr[key + 1] += indptr[key]

    fill = indptr[:-1].copy()
    order = np.empty(visit.shape[0], np.int64)
    for j in range(visit.shape[0]):
        position = visit[j]
        key = keys[position]
        order[fill[key]] = position
        fill[key] += 1
    return indptr, order


@njit(cache=True, nogil=True)
def _first_duplicate(indptr, columns):
    """Return the first entry whose column equals the previous one in a sorted CSR row, else -1."""
    for row in range(indptr.shape[0] - 1):
        for p in range(indptr[row] + 1, indptr[row + 1]):
            if columns[p] == columns[p - 1]:
                return p
    return -1
