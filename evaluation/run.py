"""`streamrec evaluate`: train on one ratings file, measure on another."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import als
from evaluation.protocol import RELEVANT_MIN_RATING, TopNCase, rating_errors, top_n_metrics
from store.movielens import MoviesFile, RatingsFile, read_movies_file, read_ratings_file
from store.ratings_data import RatingsData, genre_csr, unicode_array

log = logging.getLogger(__name__)


@dataclass
class EvaluationData:
    """Training data in dense form plus the test rows mapped onto its indices (-1 = unknown)."""

    train: RatingsData
    test_user_ids: np.ndarray
    test_user_idx: np.ndarray
    test_item_idx: np.ndarray
    test_rating: np.ndarray
    test_timestamp: np.ndarray


def id_order(ids: np.ndarray) -> np.ndarray:
    """Sort ids numerically when all are integers (MovieLens), else as strings."""
    unique = np.unique(ids.astype(str))
    try:
        return unique[np.argsort(unique.astype(np.int64), kind="stable")]
    except ValueError:
        return unique


def lookup(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Index of each id in `known` (any order), -1 when absent."""
    order = np.argsort(known)
    sorted_known = known[order]
    position = np.searchsorted(sorted_known, ids)
    position = np.clip(position, 0, max(len(known) - 1, 0))
    found = (len(known) > 0) & (sorted_known[position] == ids) if len(known) else np.zeros(len(ids), bool)
    return np.where(found, order[position], -1).astype(np.int32)


def build_training_data(train: RatingsFile, movies: MoviesFile | None) -> RatingsData:
    """Dense training data; the item table is every trained item plus every catalogue movie."""
    user_ids = id_order(train.user_ids)
    catalogue = train.item_ids if movies is None else np.concatenate([train.item_ids, movies.item_ids])
    item_ids = id_order(catalogue)
    user_idx = lookup(train.user_ids.astype(str), user_ids)
    item_idx = lookup(train.item_ids.astype(str), item_ids)
    order = np.lexsort((item_idx, user_idx))

    titles = np.full(len(item_ids), "", dtype=object)
    genre_names = np.zeros(0, dtype="<U1")
    pairs_item = np.zeros(0, np.int32)
    pairs_genre = np.zeros(0, np.int32)
    if movies is not None:
        movie_idx = lookup(movies.item_ids.astype(str), item_ids)
        titles[movie_idx] = movies.titles
        genre_names = np.array(sorted({g for genres in movies.genres for g in genres}), dtype=str)
        genre_lookup = {name: i for i, name in enumerate(genre_names)}
        pairs = sorted(
            (int(idx), genre_lookup[g]) for idx, genres in zip(movie_idx, movies.genres) for g in set(genres)
        )
        if pairs:
            pairs_item = np.array([p[0] for p in pairs], np.int32)
            pairs_genre = np.array([p[1] for p in pairs], np.int32)
    indptr, indices = genre_csr(pairs_item, pairs_genre, len(item_ids))

    return RatingsData(
        user_idx=user_idx[order], item_idx=item_idx[order],
        rating=train.rating[order].astype(np.float32), timestamp=train.timestamp[order].astype(np.int64),
        user_ids=unicode_array(user_ids), item_ids=unicode_array(item_ids),
        item_titles=unicode_array(titles.astype(str)), genre_names=genre_names,
        item_genres_indptr=indptr, item_genres_indices=indices, watermark=0,
    )


def load_evaluation_data(train_path: Path, test_path: Path, movies_path: Path | None) -> EvaluationData:
    if movies_path is None and (train_path.parent / "movies.csv").exists():
        movies_path = train_path.parent / "movies.csv"
    movies = read_movies_file(movies_path) if movies_path is not None else None
    train = build_training_data(read_ratings_file(train_path), movies)
    test = read_ratings_file(test_path)
    return EvaluationData(
        train=train,
        test_user_ids=test.user_ids.astype(str),
        test_user_idx=lookup(test.user_ids.astype(str), train.user_ids),
        test_item_idx=lookup(test.item_ids.astype(str), train.item_ids),
        test_rating=test.rating.astype(np.float64),
        test_timestamp=test.timestamp,
    )


def train_on(data: RatingsData, config: als.ALSConfig) -> als.ALSModel:
    matrix = als.build_rating_matrix(data.user_idx, data.item_idx, data.rating, data.n_users, data.n_items)
    genres = als.ItemGenres(data.item_genres_indptr, data.item_genres_indices, data.n_genres)
    return als.train(matrix, genres, config)


def top_n_cases(data: EvaluationData) -> list[TopNCase]:
    """Build one case per test user with at least one test rating of 4.0 or more.

    Users are grouped by external id, because every user unknown to training has index -1.
    """
    train = data.train
    train_indptr = np.searchsorted(train.user_idx, np.arange(train.n_users + 1))
    relevant = data.test_rating >= RELEVANT_MIN_RATING
    user_ids = data.test_user_ids[relevant]
    user_idx = data.test_user_idx[relevant]
    item_idx = data.test_item_idx[relevant]
    order = np.argsort(user_ids, kind="stable")
    boundaries = np.flatnonzero(user_ids[order][1:] != user_ids[order][:-1]) + 1

    cases = []
    for rows in np.split(order, boundaries) if len(order) else []:
        idx = int(user_idx[rows[0]])
        train_items = train.item_idx[train_indptr[idx]:train_indptr[idx + 1]] if idx >= 0 else np.zeros(0, np.int32)
        cases.append(TopNCase(user_idx=idx, train_items=train_items, relevant_items=item_idx[rows]))
    return cases


def evaluate(data: EvaluationData, config: als.ALSConfig, rating_min: float, rating_max: float) -> dict:
    """Train on `data.train` and report rating error, top-N quality and the popularity baseline."""
    train = data.train
    started = time.perf_counter()
    model = train_on(train, config)
    train_seconds = time.perf_counter() - started

    raw = als.predict(model, data.test_user_idx, data.test_item_idx)
    predictions = np.clip(raw, rating_min, rating_max)
    # Candidates are the items that occur in the training ratings, not the whole catalogue.
    candidates = np.zeros(train.n_items, dtype=bool)
    candidates[train.item_idx] = True

    # "Known" means both the user and the item have training ratings; a catalogue movie that
    # nobody rated in training is predicted from its genres and counts as unknown here.
    item_trained = np.append(candidates, False)[data.test_item_idx]
    known = (data.test_user_idx >= 0) & item_trained
    result = rating_errors(predictions, data.test_rating, known)
    cases = top_n_cases(data)

    def model_scores(user_idx: int) -> np.ndarray:
        scores = model.item_bias.astype(np.float64).copy()
        if user_idx >= 0:
            scores += model.user_factors[user_idx] @ model.item_factors.T
        return scores

    result.update(top_n_metrics(cases, model_scores, candidates))
    popularity = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float64)
    baseline = top_n_metrics(cases, lambda user_idx: popularity, candidates)
    result["popularity"] = {key: value for key, value in baseline.items() if not key.startswith("coverage")}
    result.update({
        "train_seconds": train_seconds,
        "train_ratings": int(train.nnz),
        "test_ratings": int(len(data.test_rating)),
        "test_known_ratings": int(known.sum()),
        "users": int(train.n_users),
        "items": int(train.n_items),
        "top_n_users": len(cases),
        "config": config.to_dict(),
    })
    log.info("evaluation finished rmse=%.4f ndcg_at_10=%.4f train_seconds=%.2f",
             result["rmse"], result["ndcg_at_10"], train_seconds)
    return result
