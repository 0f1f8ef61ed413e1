"""Item genres as CSR, the genre prior of each item, and the genre-factor update.

The genre prior of item n is g_n = (1 / sqrt|G_n|) sum_{k in G_n} f_k, where G_n is the item's
set of genres and f_k the factor vector of genre k. An item without genres has g_n = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from als.sparse import check_dimension, check_index_array


@dataclass
class ItemGenres:
    """Genres of each item in CSR (rows are items, columns genre indices, ascending per row)."""

    indptr: np.ndarray  # int64 (n_items + 1,)
    indices: np.ndarray  # int32 (number of item-genre pairs,)
    n_genres: int

    @property
    def n_items(self) -> int:
        """Number of items (rows)."""
        return int(self.indptr.shape[0] - 1)

    def by_genre(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the transpose as (indptr int64 (n_genres + 1,), items int32), items ascending."""
        counts = np.bincount(self.indices, minlength=self.n_genres)
        indptr = np.zeros(self.n_genres + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        item_of_entry = np.repeat(np.arange(self.n_items, dtype=np.int32), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")
        return indptr, np.ascontiguousarray(item_of_entry[order])


def build_item_genres(
    item_idx: np.ndarray, genre_idx: np.ndarray, n_items: int, n_genres: int
) -> ItemGenres:
    """Build the item -> genre CSR from (item, genre) pairs.

    Raises ValueError naming the argument when lengths differ, an index is out of range, or a
    pair repeats.
    """
    n_items = check_dimension("n_items", n_items)
    n_genres = check_dimension("n_genres", n_genres)
    items = check_index_array("item_idx", item_idx, n_items)
    genres = check_index_array("genre_idx", genre_idx, n_genres)
    if items.shape[0] != genres.shape[0]:
        raise ValueError(
            f"item_idx, genre_idx: must have equal lengths, got {items.shape[0]}, {genres.shape[0]}"
        )

    keys = items * max(n_genres, 1) + genres
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if repeated.size:
        position = int(order[repeated[0]])
        raise ValueError(
            f"item_idx, genre_idx: pair ({items[position]}, {genres[position]}) occurs more than once"
        )

    indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.bincount(items, minlength=n_items), out=indptr[1:])
    return ItemGenres(indptr=indptr, indices=genres[order].astype(np.int32), n_genres=n_genres)


def empty_item_genres(n_items: int) -> ItemGenres:
    """Return genres for n_items items that have none (and no genres exist)."""
    n_items = check_dimension("n_items", n_items)
    return ItemGenres(
        indptr=np.zeros(n_items + 1, np.int64), indices=np.zeros(0, np.int32), n_genres=0
    )


def item_prior(genre_factors: np.ndarray, genres: ItemGenres) -> np.ndarray:
    """Return the genre prior g_n of every item as float32 (n_items, K)."""
    return item_prior64(genre_factors, genres).astype(np.float32)


def item_prior64(genre_factors: np.ndarray, genres: ItemGenres) -> np.ndarray:
    """Return the genre prior of every item as float64 (n_items, K), the precision of the solves."""
    if genre_factors.ndim != 2 or genre_factors.shape[0] != genres.n_genres:
        raise ValueError(
            f"genre_factors: must have shape ({genres.n_genres}, K), got {genre_factors.shape}"
        )
    return _item_prior(genre_factors, genres.indptr, genres.indices)


def genre_weights(genres: ItemGenres) -> np.ndarray:
    """Return 1/sqrt|G_n| per item as float64 (n_items,), and 0 for items without genres."""
    counts = np.diff(genres.indptr).astype(np.float64)
    weights = np.zeros_like(counts)
    np.divide(1.0, np.sqrt(counts), out=weights, where=counts > 0)
    return weights


@njit(cache=True, nogil=True, parallel=True)
def _item_prior(genre_factors, indptr, indices):
    n_items = indptr.shape[0] - 1
    K = genre_factors.shape[1]
    prior = np.zeros((n_items, K), np.float64)
    for item in prange(n_items):
        count = indptr[item + 1] - indptr[item]
        if count == 0:
            continue
        for p in range(indptr[item], indptr[item + 1]):
            genre = indices[p]
            for k in range(K):
                prior[item, k] += genre_factors[genre, k]
        scale = 1.0 / np.sqrt(count)
        for k in range(K):
            prior[item, k] *= scale
    return prior


@njit(cache=True, nogil=True)
def update_genre_factors(
    item_factors, item_indptr, item_genres, genre_indptr, genre_items, weights, prior_weights,
    reg_ratio, genre_factors,
):
    """Set each f_k in turn to the exact minimiser of the loss over f_k, all else fixed.

    With g_n^(-k) the prior of item n without genre k, w_n = 1/sqrt|G_n| and rho_n the weight
    of item n's prior penalty (tau rho_n / 2 |v_n - g_n|^2),

        f_k = sum_{n: k in G_n} rho_n w_n (v_n - g_n^(-k)) / (sum_{n: k in G_n} rho_n w_n^2 + beta/tau)

    where reg_ratio = beta/tau. Genres are visited in index order, each using the latest values
    of the others (a Gauss-Seidel sweep), so one call never increases the loss.

    item_factors: float32 (N, K). item_indptr/item_genres: CSR item -> genre. genre_indptr/
    genre_items: CSR genre -> item. weights, prior_weights: float64 (N,). genre_factors: float32 (G, K), updated
    in place.
    """
    n_items = item_indptr.shape[0] - 1
    n_genres = genre_indptr.shape[0] - 1
    K = item_factors.shape[1]

    # Unscaled prior sums S_n = sum_{k in G_n} f_k, kept in step with the stored float32 f_k.
    sums = np.zeros((n_items, K), np.float64)
    for item in range(n_items):
        for p in range(item_indptr[item], item_indptr[item + 1]):
            for k in range(K):
                sums[item, k] += genre_factors[item_genres[p], k]

    numerator = np.empty(K, np.float64)
    change = np.empty(K, np.float64)
    for genre in range(n_genres):
        denominator = reg_ratio
        for k in range(K):
            numerator[k] = 0.0
        for p in range(genre_indptr[genre], genre_indptr[genre + 1]):
            item = genre_items[p]
            weight = weights[item]
            rho = prior_weights[item]
            denominator += rho * weight * weight
            for k in range(K):
                others = sums[item, k] - genre_factors[genre, k]
                numerator[k] += rho * weight * (item_factors[item, k] - weight * others)

        for k in range(K):
            old = np.float64(genre_factors[genre, k])
            genre_factors[genre, k] = numerator[k] / denominator
            change[k] = np.float64(genre_factors[genre, k]) - old
        for p in range(genre_indptr[genre], genre_indptr[genre + 1]):
            item = genre_items[p]
            for k in range(K):
                sums[item, k] += change[k]
