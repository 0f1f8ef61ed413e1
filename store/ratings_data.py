"""All ratings as numpy arrays in dense-index form, the input of training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RatingsData:
    """Every current rating plus the id, title and genre tables that the dense indices point into.

    Rows of `user_idx`, `item_idx`, `rating` and `timestamp` are one rating each, sorted by
    (user_idx, item_idx), with no duplicate pair. `user_ids[user_idx]` and `item_ids[item_idx]`
    give the external ids. Items nobody rated are present in the item tables.
    """

    user_idx: np.ndarray  # int32, one per rating
    item_idx: np.ndarray  # int32, one per rating
    rating: np.ndarray  # float32 stars, one per rating
    timestamp: np.ndarray  # int64 seconds since the epoch, one per rating
    user_ids: np.ndarray  # unicode, indexed by user_idx
    item_ids: np.ndarray  # unicode, indexed by item_idx
    item_titles: np.ndarray  # unicode, indexed by item_idx; "" when no movies file named the item
    genre_names: np.ndarray  # unicode, sorted; a genre index points into this array
    item_genres_indptr: np.ndarray  # int64 (n_items + 1,): CSR rows of item -> genre index
    item_genres_indices: np.ndarray  # int32 genre indices, sorted within each item
    watermark: int  # highest updated_seq among the ratings; 0 for bulk-loaded data
    # The database's ratings_generation when the ratings were read; None when it has none (made
    # by an earlier release) or the reader did not pass it on.
    generation: str | None = None

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def n_genres(self) -> int:
        return int(self.genre_names.shape[0])

    @property
    def nnz(self) -> int:
        """Number of ratings."""
        return int(self.rating.shape[0])

    def item_genres(self, item_idx: int) -> list[str]:
        """Return the genre names of one item."""
        start, stop = self.item_genres_indptr[item_idx], self.item_genres_indptr[item_idx + 1]
        return [str(name) for name in self.genre_names[self.item_genres_indices[start:stop]]]


def genre_csr(
    item_idx: np.ndarray, genre_idx: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Build CSR (indptr int64, indices int32) of item -> genre from (item, genre) pairs.

    The pairs must be unique and sorted by (item_idx, genre_idx).
    """
    counts = np.bincount(item_idx.astype(np.int64), minlength=n_items)
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, genre_idx.astype(np.int32)


def unicode_array(values: np.ndarray) -> np.ndarray:
    """Convert an object array of str to a numpy unicode array, which saves without pickle."""
    if values.shape[0] == 0:
        return np.empty(0, dtype="<U1")
    return np.asarray(values, dtype=str)
