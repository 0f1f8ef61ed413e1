"""The query module: recommendations, similar items and predictions from the current snapshot.

A Recommender memory-maps the version CURRENT names and switches to a newer one on the first
call after CURRENT changes, without a restart. Users refolded by the worker since that version
was trained are read from Redis and used in place of their trained rows.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import redis

import als
from api.results import Recommendation, Recommendations, UserSource
from store.errors import InvalidQueryError, SnapshotError, SnapshotNotFoundError, UnknownItemError
from store.settings import Settings
from store.snapshots import CURRENT_FILE, Snapshot, SnapshotStore, model_of
from store.user_state import UserState, read_user_state

log = logging.getLogger(__name__)

# Seconds between two warnings about an unreachable Redis, so an outage logs a line per interval.
REDIS_ERROR_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class _Served:
    """One opened snapshot and what the queries derive from it once."""

    snapshot: Snapshot
    model: als.ALSModel
    config: als.ALSConfig
    genre_index: dict[str, int]
    item_genre_matrix: np.ndarray  # bool (N, G): item n has genre k
    unit_item_factors: np.ndarray  # float32 (N, K): v_n / |v_n|, zero rows stay zero
    item_support: np.ndarray  # float64 (N,): log(1 + count_n), the support of every item


@dataclass(frozen=True)
class _UserVector:
    """The user side of the score b_m + c_n + u_m.v_n, and the items to leave out."""

    bias: float
    factors: np.ndarray | None  # None means u_m = 0
    seen_idx: np.ndarray
    source: UserSource


class Recommender:
    """Ranks items for users and visitors against the current snapshot. Safe to share between threads."""

    def __init__(self, settings: Settings, redis: redis.Redis | None = None) -> None:
        """Open the current snapshot when one exists; `redis` supplies refolded users (optional).

        Without a published snapshot the constructor succeeds and each query raises
        SnapshotNotFoundError until one is published.
        """
        self._store = SnapshotStore(settings.snapshots_dir)
        self._current_path = self._store.snapshots_dir / CURRENT_FILE
        self._redis = redis
        self._lock = threading.Lock()
        self._served: _Served | None = None
        self._current_stamp: tuple[int, int, int] | None = None
        self._redis_error_logged_at = -math.inf
        try:
            self._serving()
        except SnapshotNotFoundError:
            log.warning("no snapshot published yet snapshots_dir=%s", self._store.snapshots_dir)

    @property
    def version(self) -> int:
        """The snapshot version that queries use (after checking CURRENT)."""
        return self._serving().snapshot.version

    # Queries

    def recommend(
        self,
        user_id: str,
        n: int = 10,
        exclude_seen: bool = True,
        genres: Iterable[str] | None = None,
    ) -> Recommendations:
        """Return the user's top `n` items, best first.

        The user vector comes from Redis when the worker refolded the user against this snapshot
        version, else from the user's trained row. An unknown user gets the ranking by item bias
        alone, marked `personalised=False`. `genres` keeps only items with at least one of them.
        Raises InvalidQueryError for a user_id that is not a string or integer, n < 1 or an
        unknown genre.
        """
        if isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
            raise InvalidQueryError(f"user_id: must be a string or an integer, got {user_id!r}")
        _check_count(n)
        served = self._serving()
        allowed = self._genre_mask(served, genres)
        user = self._user_vector(served, str(user_id))
        if exclude_seen:
            allowed[user.seen_idx] = False
        ranked, scores = _rank(served, user, allowed, n)
        return Recommendations(
            items=_items(served.snapshot, ranked, scores),
            personalised=user.source != "none",
            source=user.source,
            version=served.snapshot.version,
        )

    def recommend_for_ratings(
        self,
        ratings: Mapping[str, float],
        n: int = 10,
        genres: Iterable[str] | None = None,
    ) -> Recommendations:
        """Return the top `n` items for a visitor described only by `{item_id: rating}`.

        The visitor is folded into the snapshot (the best bias and factors for these ratings with
        the items fixed), and the rated items are left out. Item ids the snapshot lacks are
        ignored and listed in `ignored_item_ids`. Raises InvalidQueryError for a rating off the
        scale, n < 1 or an unknown genre.
        """
        if not isinstance(ratings, Mapping):
            raise InvalidQueryError(
                f"ratings: must be a mapping of item_id to rating, got {type(ratings).__name__}"
            )
        _check_count(n)
        served = self._serving()
        snapshot = served.snapshot
        allowed = self._genre_mask(served, genres)

        known_idx: list[int] = []
        known_ratings: list[float] = []
        ignored: list[str] = []
        for item_id, rating in ratings.items():
            rating = _check_rating(snapshot, item_id, rating)
            item_idx = snapshot.item_index(str(item_id))
            if item_idx is None:
                ignored.append(str(item_id))
                continue
            if item_idx in known_idx:  # a visitor rates a few items, so the scan is short
                raise InvalidQueryError(f"ratings: item_id {str(item_id)!r} is given twice")
            known_idx.append(item_idx)
            known_ratings.append(rating)

        if known_idx:
            order = np.argsort(known_idx)
            item_idx = np.asarray(known_idx, dtype=np.int32)[order]
            bias, factors = als.fold_in(
                item_idx, np.asarray(known_ratings, dtype=np.float32)[order], served.model, served.config
            )
            user = _UserVector(bias=bias, factors=factors, seen_idx=item_idx, source="ratings")
        else:
            user = _UserVector(bias=0.0, factors=None, seen_idx=np.zeros(0, np.int32), source="none")
        if ignored:
            log.info("visitor ratings ignored unknown_items=%d version=%d", len(ignored), snapshot.version)

        allowed[user.seen_idx] = False
        ranked, scores = _rank(served, user, allowed, n)
        return Recommendations(
            items=_items(snapshot, ranked, scores),
            personalised=user.source != "none",
            source=user.source,
            version=snapshot.version,
            ignored_item_ids=ignored,
        )

    def similar_items(self, item_id: str, n: int = 10) -> list[Recommendation]:
        """Return the `n` items whose factors have the highest cosine similarity to the item's.

        The item itself is left out. An item whose factors are all zero (no ratings and no genres)
        is similar to nothing, so every score is 0 and ties go to the lower item_idx. Raises
        UnknownItemError when the snapshot lacks the item, InvalidQueryError for n < 1.
        """
        _check_count(n)
        served = self._serving()
        item_idx = self._item_idx(served, item_id)

        similarity = served.unit_item_factors @ served.unit_item_factors[item_idx]
        allowed = np.ones(len(similarity), dtype=bool)
        allowed[item_idx] = False
        candidates = np.flatnonzero(allowed)
        ranked = candidates[als.top_n(similarity[candidates], n)]
        return _items(served.snapshot, ranked, similarity[ranked])

    def predict(self, user_id: str, item_id: str) -> float:
        """Return the predicted rating μ + b_m + c_n + u_m.v_n, clipped to the rating scale.

        An unknown user counts as b_m = 0 and u_m = 0, an unknown item as c_n = 0 and v_n = 0, so
        the result is always a finite rating. The snapshot's own items already carry their genre
        prior in v_n.
        """
        served = self._serving()
        snapshot = served.snapshot
        user = self._user_vector(served, str(user_id))
        item_idx = snapshot.item_index(str(item_id))

        rating = snapshot.global_mean + user.bias
        if item_idx is not None:
            rating += float(snapshot.item_bias[item_idx])
            if user.factors is not None:
                rating += float(np.dot(user.factors, snapshot.item_factors[item_idx]))
        return float(min(max(rating, snapshot.rating_min), snapshot.rating_max))

    def predict_many(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """Return `predict` for each (user_ids[i], item_ids[i]) pair, as a float64 array.

        Each distinct user is looked up once, so scoring a whole test set costs one Redis read
        per user rather than per pair.
        """
        if len(user_ids) != len(item_ids):
            raise InvalidQueryError(
                f"user_ids and item_ids: must have the same length, got {len(user_ids)} and {len(item_ids)}"
            )
        served = self._serving()
        snapshot = served.snapshot
        users = np.asarray(user_ids, dtype=str)
        item_idx = snapshot.item_indices([str(item) for item in item_ids])
        known_item = item_idx >= 0
        safe_idx = np.where(known_item, item_idx, 0)

        predictions = np.full(len(users), snapshot.global_mean, dtype=np.float64)
        predictions += np.where(known_item, snapshot.item_bias[safe_idx], 0.0)
        distinct, rows_of_user = np.unique(users, return_inverse=True)
        for position, user_id in enumerate(distinct):
            rows = np.flatnonzero(rows_of_user == position)
            user = self._user_vector(served, str(user_id))
            predictions[rows] += user.bias
            if user.factors is not None:
                dots = snapshot.item_factors[safe_idx[rows]] @ user.factors
                predictions[rows] += np.where(known_item[rows], dots, 0.0)
        return np.clip(predictions, snapshot.rating_min, snapshot.rating_max)

    # Snapshot switching

    def _serving(self) -> _Served:
        """Return the snapshot to serve, switching when CURRENT has changed since the last call.

        One stat() per call detects the change, because publish and rollback both replace CURRENT
        by renaming a new file over it (a new inode).
        """
        try:
            status = os.stat(self._current_path)
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            stamp = None
        served = self._served
        if served is not None and stamp == self._current_stamp:
            return served

        with self._lock:
            if self._served is not None and stamp == self._current_stamp:
                return self._served
            if stamp is None:
                if self._served is None:
                    raise SnapshotNotFoundError(
                        f"no snapshot published in {self._store.snapshots_dir}. "
                        "Train and publish one first"
                    )
                log.warning("CURRENT missing, serving the loaded snapshot version=%d", self._served.snapshot.version)
                self._current_stamp = stamp
                return self._served

            version = self._store.current_version()
            if self._served is None or self._served.snapshot.version != version:
                try:
                    loaded = _load(self._store, version)
                except SnapshotError:
                    if self._served is None:
                        raise
                    log.exception(
                        "snapshot load failed, serving the loaded one version=%s serving=%d",
                        version,
                        self._served.snapshot.version,
                    )
                    self._current_stamp = stamp
                    return self._served
                previous = self._served.snapshot.version if self._served is not None else None
                self._served = loaded
                log.info("snapshot loaded version=%d previous=%s", version, previous)
            self._current_stamp = stamp
            return self._served

    # Helpers

    def _user_vector(self, served: _Served, user_id: str) -> _UserVector:
        snapshot = served.snapshot
        state = self._refolded_state(user_id)
        if state is not None and state.version == snapshot.version:
            if len(state.factors) == snapshot.item_factors.shape[1] and (
                len(state.seen_idx) == 0 or state.seen_idx.max() < len(snapshot.item_ids)
            ):
                return _UserVector(state.bias, state.factors, state.seen_idx, "refolded")
            log.warning(
                "refolded user state does not fit the snapshot, ignored user_id=%s version=%d",
                user_id,
                snapshot.version,
            )

        user_idx = snapshot.user_index(user_id)
        if user_idx is not None:
            return _UserVector(
                float(snapshot.user_bias[user_idx]),
                np.asarray(snapshot.user_factors[user_idx]),
                snapshot.seen_items(user_idx),
                "snapshot",
            )
        return _UserVector(0.0, None, np.zeros(0, np.int32), "none")

    def _refolded_state(self, user_id: str) -> UserState | None:
        if self._redis is None:
            return None
        try:
            return read_user_state(self._redis, user_id)
        except ValueError:
            log.warning("refolded user state invalid, ignored user_id=%s", user_id, exc_info=True)
            return None
        except redis.RedisError as exc:
            # Serving the trained rows beats failing the query while Redis is unreachable.
            now = time.monotonic()
            if now - self._redis_error_logged_at >= REDIS_ERROR_LOG_INTERVAL:
                self._redis_error_logged_at = now
                log.warning("redis unavailable, serving trained users only error=%s", exc)
            return None

    @staticmethod
    def _genre_mask(served: _Served, genres: Iterable[str] | None) -> np.ndarray:
        """Return a writable bool mask over items: True where the item may be recommended."""
        n_items = served.item_genre_matrix.shape[0]
        if genres is None:
            return np.ones(n_items, dtype=bool)
        if isinstance(genres, str):
            genres = [genres]
        genre_indices = []
        for name in genres:
            if name not in served.genre_index:
                valid = ", ".join(served.snapshot.genre_names.tolist())
                raise InvalidQueryError(f"genres: unknown genre {name!r}, valid genres are: {valid}")
            genre_indices.append(served.genre_index[name])
        if not genre_indices:
            return np.ones(n_items, dtype=bool)
        return served.item_genre_matrix[:, genre_indices].any(axis=1)

    @staticmethod
    def _item_idx(served: _Served, item_id: str) -> int:
        item_idx = served.snapshot.item_index(str(item_id))
        if item_idx is None:
            raise UnknownItemError(
                f"item_id: {item_id!r} not found in snapshot version {served.snapshot.version}"
            )
        return item_idx


def _load(store: SnapshotStore, version: int | None) -> _Served:
    """Open a version and derive the per-snapshot lookups the queries need."""
    snapshot = store.open(version)
    model, config = model_of(snapshot)

    n_items, n_genres = len(snapshot.item_ids), len(snapshot.genre_names)
    item_genre_matrix = np.zeros((n_items, n_genres), dtype=bool)
    rows = np.repeat(np.arange(n_items), np.diff(snapshot.item_genres_indptr))
    item_genre_matrix[rows, snapshot.item_genres_indices] = True

    norms = np.linalg.norm(snapshot.item_factors, axis=1, keepdims=True)
    unit_item_factors = np.divide(
        snapshot.item_factors,
        norms,
        out=np.zeros(snapshot.item_factors.shape, dtype=np.float32),
        where=norms > 0,
    )
    return _Served(
        snapshot=snapshot,
        model=model,
        config=config,
        genre_index={name: k for k, name in enumerate(snapshot.genre_names.tolist())},
        item_genre_matrix=item_genre_matrix,
        unit_item_factors=unit_item_factors,
        item_support=als.item_support(snapshot.item_rating_count),
    )


def _rank(served: _Served, user: _UserVector, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the `n` best allowed item_idx and their ranking scores, best first.

    The score is als.ranking_scores (b_m + c_n + u_m.v_n plus the support term, weighted by the
    number of items the user rated); a user without factors counts as u_m = 0. Ties go to the
    lower item_idx because candidates stay in ascending order.
    """
    snapshot = served.snapshot
    config = served.config
    factors = user.factors if user.factors is not None else np.zeros(snapshot.item_factors.shape[1], np.float32)
    weight = float(als.support_weights(config.support_weight, config.support_half_count, len(user.seen_idx)))
    scores = als.ranking_scores(
        user.bias, factors, snapshot.item_bias, snapshot.item_factors,
        snapshot.item_rating_count, weight, support=served.item_support,
    )
    candidates = np.flatnonzero(allowed)
    best = candidates[als.top_n(scores[candidates], n)]
    return best, scores[best]


def _items(snapshot: Snapshot, ranked: np.ndarray, scores: np.ndarray) -> list[Recommendation]:
    genre_names = snapshot.genre_names.tolist()
    return [
        Recommendation(
            item_id=str(snapshot.item_ids[item_idx]),
            title=str(snapshot.item_titles[item_idx]),
            genres=[genre_names[k] for k in snapshot.item_genres(item_idx).tolist()],
            score=float(score),
        )
        for item_idx, score in zip(ranked.tolist(), scores.tolist())
    ]


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidQueryError(f"n: must be an integer of at least 1, got {n!r}")


def _check_rating(snapshot: Snapshot, item_id: str, rating: float) -> float:
    try:
        value = float(rating)
    except (TypeError, ValueError):
        raise InvalidQueryError(f"rating for item_id={item_id!r}: must be a number, got {rating!r}") from None
    if not (math.isfinite(value) and snapshot.rating_min <= value <= snapshot.rating_max):
        raise InvalidQueryError(
            f"rating for item_id={item_id!r}: must be between {snapshot.rating_min} and "
            f"{snapshot.rating_max}, got {rating}"
        )
    return value
