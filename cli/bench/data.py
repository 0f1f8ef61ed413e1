"""Synthetic ratings with the shape of MovieLens-32M, scaled to any size.

Both sides follow a power law: user activity is Pareto-distributed with at least 20 ratings per
user, and item popularity is a Zipf-like weight calibrated so that the most-rated item holds
about the same share of all ratings as in MovieLens-32M (about 100k of 32M). Ratings come from
a small hidden low-rank model plus noise, rounded to half stars, so ALS has something to learn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
from numba import njit, prange

log = logging.getLogger(__name__)

# The MovieLens-32M release that the full size copies.
FULL_USERS = 200_948
FULL_ITEMS = 87_585
FULL_RATINGS = 32_000_204
# Share of all ratings held by the most-rated item (about 100k of 32M).
TOP_ITEM_SHARE = 100_000 / FULL_RATINGS
MIN_USER_RATINGS = 20
N_GENRES = 20
# Rank of the hidden model that generates the ratings.
HIDDEN_RANK = 8


@dataclass(frozen=True)
class SyntheticData:
    """Ratings sorted by (user_idx, item_idx) and each item's genres as CSR."""

    user_idx: np.ndarray  # int32
    item_idx: np.ndarray  # int32
    rating: np.ndarray  # float32, half stars in [0.5, 5.0]
    n_users: int
    n_items: int
    genre_indptr: np.ndarray  # int64 (n_items + 1,)
    genre_indices: np.ndarray  # int32, ascending within an item
    n_genres: int

    @property
    def n_ratings(self) -> int:
        return int(self.rating.shape[0])


def parse_size(text: str) -> int:
    """Return a rating count from "1M", "10M", "32M", "250k" or a plain integer.

    "32M" means the full MovieLens-32M count. Raises ValueError naming the value otherwise.
    """
    raw = text.strip().lower()
    if raw == "32m":
        return FULL_RATINGS
    scale = {"k": 1_000, "m": 1_000_000}.get(raw[-1:], 1)
    digits = raw[:-1] if scale > 1 else raw
    try:
        count = int(float(digits) * scale)
    except ValueError:
        raise ValueError(f"size: must be a count such as 1M or 32M, got {text!r}") from None
    if not 1_000 <= count <= FULL_RATINGS:
        raise ValueError(f"size: must be between 1k and 32M ratings, got {text!r}")
    return count


def generate(n_ratings: int, seed: int = 7) -> SyntheticData:
    """Generate n_ratings ratings; users and items scale with n_ratings / 32M.

    Raises ValueError when n_ratings does not fit the scaled users and items.
    """
    fraction = n_ratings / FULL_RATINGS
    # Tiny sizes keep at least 1000 items, so that their users can still draw 20 ratings or more.
    n_users = max(10, round(FULL_USERS * fraction))
    n_items = max(1000, round(FULL_ITEMS * fraction))
    rng = np.random.default_rng(seed)

    # Each user rates at most a third of the items, so drawing without replacement stays cheap.
    cap = max(MIN_USER_RATINGS, n_items // 3)
    if n_users * MIN_USER_RATINGS > n_ratings or n_users * cap < n_ratings:
        raise ValueError(f"n_ratings: {n_ratings} does not fit {n_users} users and {n_items} items")
    counts = _user_counts(rng, n_users, n_ratings, cap)
    weights = _item_weights(counts, n_items, n_ratings)
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]

    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    user_seeds = rng.integers(0, 2**62, n_users, dtype=np.int64)
    items = _draw_items(indptr, cumulative, user_seeds)

    # Hidden model: biases and factors, so the ratings have user, item and taste structure.
    user_factors = rng.normal(0, 0.45, (n_users, HIDDEN_RANK)).astype(np.float32)
    item_factors = rng.normal(0, 0.45, (n_items, HIDDEN_RANK)).astype(np.float32)
    user_bias = rng.normal(0, 0.4, n_users).astype(np.float32)
    item_bias = rng.normal(0, 0.5, n_items).astype(np.float32) + 0.6 * weights.astype(np.float32) / weights.max()
    ratings = _ratings(indptr, items, user_factors, item_factors, user_bias, item_bias, user_seeds)

    genre_indptr, genre_indices = _genres(rng, n_items)
    return SyntheticData(
        user_idx=np.repeat(np.arange(n_users, dtype=np.int32), counts),
        item_idx=items,
        rating=ratings,
        n_users=n_users,
        n_items=n_items,
        genre_indptr=genre_indptr,
        genre_indices=genre_indices,
        n_genres=N_GENRES,
    )


def _user_counts(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int) -> np.ndarray:
    """Pareto counts of at least MIN_USER_RATINGS and at most cap that sum to n_ratings."""
    mean = n_ratings / n_users
    # Pareto with minimum x_m has mean a x_m / (a - 1); solve for the shape a.
    shape = mean / (mean - MIN_USER_RATINGS)
    raw = MIN_USER_RATINGS * (1.0 - rng.random(n_users)) ** (-1.0 / shape)
    extra = raw - MIN_USER_RATINGS

    # The cap cuts the tail, so scale the part above the minimum until the sum is right.
    low, high = 0.0, 1e3
    for _ in range(60):
        middle = (low + high) / 2
        total = np.minimum(MIN_USER_RATINGS + extra * middle, cap).astype(np.int64).sum()
        low, high = (middle, high) if total < n_ratings else (low, middle)
    counts = np.minimum(MIN_USER_RATINGS + extra * low, cap).astype(np.int64)

    # Hand out the rounding remainder one rating at a time to users below the cap.
    missing = n_ratings - int(counts.sum())
    room = np.flatnonzero(counts < cap)
    chosen = rng.choice(room, size=missing, replace=missing > room.size)
    np.add.at(counts, chosen, 1)
    return np.minimum(counts, cap)


def _item_weights(counts: np.ndarray, n_items: int, n_ratings: int) -> np.ndarray:
    """Zipf weights 1 / (rank + 10)^a, with a chosen so the top item gets its target share."""
    ranks = np.arange(n_items, dtype=np.float64)
    target = TOP_ITEM_SHARE * n_ratings
    low, high = 0.1, 3.0
    for _ in range(40):
        exponent = (low + high) / 2
        weights = (ranks + 10.0) ** -exponent
        top = weights[0] / weights.sum()
        # A user with c ratings includes the top item with probability about 1 - (1 - p)^c.
        expected = float(np.sum(1.0 - (1.0 - top) ** counts))
        low, high = (exponent, high) if expected < target else (low, exponent)
    return (ranks + 10.0) ** -low


@njit(cache=True, parallel=True)
def _draw_items(indptr, cumulative, user_seeds):
    """Draw each user's items without replacement by popularity; rows come out sorted."""
    n_users = indptr.shape[0] - 1
    n_items = cumulative.shape[0]
    items = np.empty(indptr[-1], np.int32)
    n_chunks = 64
    for chunk in prange(n_chunks):
        marker = np.full(n_items, -1, np.int64)
        for user in range(chunk, n_users, n_chunks):
            np.random.seed(user_seeds[user])
            start = indptr[user]
            stop = indptr[user + 1]
            filled = start
            while filled < stop:
                item = np.searchsorted(cumulative, np.random.random())
                if item >= n_items:
                    item = n_items - 1
                if marker[item] != user:
                    marker[item] = user
                    items[filled] = item
                    filled += 1
            items[start:stop] = np.sort(items[start:stop])
    return items


@njit(cache=True, parallel=True)
def _ratings(indptr, items, user_factors, item_factors, user_bias, item_bias, user_seeds):
    """Return the hidden-model score plus noise, rounded to half stars and clipped to [0.5, 5.0]."""
    n_users = indptr.shape[0] - 1
    rank = user_factors.shape[1]
    ratings = np.empty(items.shape[0], np.float32)
    for user in prange(n_users):
        np.random.seed(user_seeds[user] + 1)
        for p in range(indptr[user], indptr[user + 1]):
            item = items[p]
            score = 3.5 + user_bias[user] + item_bias[item] + 0.5 * np.random.standard_normal()
            for k in range(rank):
                score += user_factors[user, k] * item_factors[item, k]
            stars = np.round(score * 2.0) / 2.0
            ratings[p] = min(5.0, max(0.5, stars))
    return ratings


def _genres(rng: np.random.Generator, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one to three distinct genres per item, skewed like MovieLens (a few genres are common)."""
    counts = rng.choice([1, 2, 3], size=n_items, p=[0.45, 0.35, 0.2])
    genre_weights = 1.0 / np.arange(1, N_GENRES + 1) ** 0.8
    genre_weights /= genre_weights.sum()
    indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], np.int32)
    for size in (1, 2, 3):
        rows = np.flatnonzero(counts == size)
        # Gumbel top-k draws `size` distinct genres per item in one vectorised call.
        keys = np.log(genre_weights)[np.newaxis, :] - np.log(-np.log(rng.random((rows.size, N_GENRES))))
        chosen = np.sort(np.argsort(-keys, axis=1)[:, :size], axis=1)
        positions = indptr[rows][:, np.newaxis] + np.arange(size)[np.newaxis, :]
        indices[positions.ravel()] = chosen.ravel()
    return indptr, indices


def write_parquet(data: SyntheticData, directory: Path) -> tuple[Path, Path]:
    """Write ratings.parquet (user_idx, item_idx, rating) and genres.parquet (item_idx, genre_idx)."""
    directory.mkdir(parents=True, exist_ok=True)
    ratings_path = directory / "ratings.parquet"
    genres_path = directory / "genres.parquet"
    con = duckdb.connect(":memory:")
    try:
        con.register("ratings_frame", {
            "user_idx": data.user_idx, "item_idx": data.item_idx, "rating": data.rating,
        })
        con.execute(f"COPY ratings_frame TO '{ratings_path}' (FORMAT parquet)")
        item_of_pair = np.repeat(np.arange(data.n_items, dtype=np.int32), np.diff(data.genre_indptr))
        con.register("genres_frame", {"item_idx": item_of_pair, "genre_idx": data.genre_indices})
        con.execute(f"COPY genres_frame TO '{genres_path}' (FORMAT parquet)")
    finally:
        con.close()
    return ratings_path, genres_path
