"""`streamrec evaluate`: train on one ratings file, measure on another."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
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


# Movies files looked for beside the training file, one per MovieLens layout.
MOVIES_FILE_NAMES = ("movies.csv", "movies.dat", "u.item")


def movies_file_beside(ratings_path: Path) -> Path | None:
    """Return the MovieLens movies file in the ratings file's directory, or None."""
    for name in MOVIES_FILE_NAMES:
        candidate = ratings_path.parent / name
        if candidate.is_file():
            return candidate
    return None


def load_training_data(train_path: Path, movies_path: Path | None) -> RatingsData:
    """Read a training ratings file (any MovieLens layout) and its movies into dense form.

    movies_path defaults to a movies file beside the ratings file; without one there are no
    genres. Raises DataFileError naming a file that cannot be read.
    """
    if movies_path is None:
        movies_path = movies_file_beside(train_path)
    movies = read_movies_file(movies_path) if movies_path is not None else None
    return build_training_data(read_ratings_file(train_path), movies)


def load_evaluation_data(train_path: Path, test_path: Path, movies_path: Path | None) -> EvaluationData:
    """Read a training and a test ratings file (any MovieLens layout) and index the test rows.

    movies_path defaults to a movies file beside the training file; without one the model has
    no genres. Raises DataFileError naming a file that cannot be read.
    """
    train = load_training_data(train_path, movies_path)
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
    """Train the model on every rating of `data`."""
    matrix = als.build_rating_matrix(data.user_idx, data.item_idx, data.rating, data.n_users, data.n_items)
    genres = als.ItemGenres(data.item_genres_indptr, data.item_genres_indices, data.n_genres)
    return als.train(matrix, genres, config)


def item_rating_count(data: RatingsData) -> np.ndarray:
    """Number of training ratings of each item, int32 (what a snapshot stores)."""
    return np.bincount(data.item_idx, minlength=data.n_items).astype(np.int32)


def model_ranking(
    model: als.ALSModel, config: als.ALSConfig, data: RatingsData
) -> Callable[[int], np.ndarray]:
    """Return score_user(user_idx): the ranking score of every item, as the query module ranks.

    Item supports and user weights come from the training ratings in `data`. An unknown user
    (-1) has bias 0, factors 0 and no ratings.
    """
    no_factors = np.zeros(model.factors, np.float32)
    counts = item_rating_count(data)
    support = als.item_support(counts)
    user_counts = np.bincount(data.user_idx, minlength=data.n_users)
    weights = als.support_weights(config.support_weight, config.support_half_count, user_counts)
    unknown_weight = float(als.support_weights(config.support_weight, config.support_half_count, 0))

    def score_user(user_idx: int) -> np.ndarray:
        known = user_idx >= 0
        return als.ranking_scores(
            float(model.user_bias[user_idx]) if known else 0.0,
            model.user_factors[user_idx] if known else no_factors,
            model.item_bias, model.item_factors, counts,
            float(weights[user_idx]) if known else unknown_weight,
            support=support,
        )

    return score_user


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


def clipped_predictions(
    model: als.ALSModel, data: EvaluationData, rating_min: float, rating_max: float
) -> np.ndarray:
    """Predicted rating of every test row, clipped to the rating scale (unknown rows by fallback)."""
    raw = als.predict(model, data.test_user_idx, data.test_item_idx)
    return np.clip(raw, rating_min, rating_max)


def cold_item_rows(data: EvaluationData) -> np.ndarray:
    """Mask of test rows whose item has no training rating (it may still have genres)."""
    counts = item_rating_count(data.train)
    padded = np.append(counts, 0)  # index -1 (an item missing from the catalogue) reads the 0
    return padded[data.test_item_idx] == 0


def evaluate(data: EvaluationData, config: als.ALSConfig, rating_min: float, rating_max: float) -> dict:
    """Train on `data.train` and report rating error, top-N quality and the popularity baseline.

    Also reports rmse_cold_items, the RMSE over test rows whose item has no training ratings
    (NaN when there are none), where only the genre prior can help.
    """
    train = data.train
    started = time.perf_counter()
    model = train_on(train, config)
    train_seconds = time.perf_counter() - started

    predictions = clipped_predictions(model, data, rating_min, rating_max)
    counts = item_rating_count(train)
    # Candidates are the items that occur in the training ratings, not the whole catalogue.
    candidates = counts > 0

    # "Known" means both the user and the item have training ratings; a catalogue movie that
    # nobody rated in training is predicted from its genres and counts as unknown here.
    cold = cold_item_rows(data)
    known = (data.test_user_idx >= 0) & ~cold
    result = rating_errors(predictions, data.test_rating, known)
    result["rmse_cold_items"] = als.rmse(predictions[cold], data.test_rating[cold]) if cold.any() else float("nan")
    cases = top_n_cases(data)

    result.update(top_n_metrics(cases, model_ranking(model, config, train), candidates))
    popularity = counts.astype(np.float64)
    baseline = top_n_metrics(cases, lambda user_idx: popularity, candidates)
    result["popularity"] = {key: value for key, value in baseline.items() if not key.startswith("coverage")}
    result.update({
        "train_seconds": train_seconds,
        "train_ratings": int(train.nnz),
        "test_ratings": int(len(data.test_rating)),
        "test_known_ratings": int(known.sum()),
        "test_cold_item_ratings": int(cold.sum()),
        "users": int(train.n_users),
        "items": int(train.n_items),
        "top_n_users": len(cases),
        "config": config.to_dict(),
    })
    log.info("evaluation finished rmse=%.4f ndcg_at_10=%.4f train_seconds=%.2f",
             result["rmse"], result["ndcg_at_10"], train_seconds)
    return result


def genre_ablation(
    data: EvaluationData, config: als.ALSConfig, rating_min: float, rating_max: float
) -> dict[str, float]:
    """Train with and without the genre prior; return RMSE overall and on cold-item test rows.

    Keys: rmse_with_genres, rmse_without_genres, rmse_cold_items_with_genres,
    rmse_cold_items_without_genres, cold_item_ratings.
    """
    cold = cold_item_rows(data)
    result: dict[str, float] = {"cold_item_ratings": int(cold.sum())}
    for suffix, use_genres in (("with_genres", True), ("without_genres", False)):
        model = train_on(data.train, dataclasses.replace(config, use_genres=use_genres))
        predictions = clipped_predictions(model, data, rating_min, rating_max)
        result[f"rmse_{suffix}"] = als.rmse(predictions, data.test_rating)
        result[f"rmse_cold_items_{suffix}"] = (
            als.rmse(predictions[cold], data.test_rating[cold]) if cold.any() else float("nan")
        )
    return result
