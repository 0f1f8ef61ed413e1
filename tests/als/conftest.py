"""Fixtures for the ALS tests: MovieLens ratings and genres read with csv, small random data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import als

NO_GENRES = "(no genres listed)"


@dataclass
class MovieLens:
    """ml-latest-small as dense indices: ratings, genres and the id -> index maps."""

    matrix: als.RatingMatrix
    genres: als.ItemGenres
    user_index: dict[int, int]
    item_index: dict[int, int]


def read_ratings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (userId int64, movieId int64, rating float64) columns of a ratings CSV file."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2))
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]


def read_genres(movies_csv: Path) -> tuple[dict[int, int], als.ItemGenres]:
    """Return movieId -> item index (ascending movieId) and the item genres of movies.csv."""
    movie_genres: dict[int, list[str]] = {}
    with open(movies_csv, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for movie_id, _title, genres in reader:
            movie_genres[int(movie_id)] = [] if genres == NO_GENRES else genres.split("|")

    item_index = {movie_id: idx for idx, movie_id in enumerate(sorted(movie_genres))}
    names = sorted({name for names in movie_genres.values() for name in names})
    genre_index = {name: idx for idx, name in enumerate(names)}
    pairs = [
        (item_index[movie_id], genre_index[name])
        for movie_id, names in movie_genres.items()
        for name in names
    ]
    items, genre_ids = (np.array(column, np.int64) for column in zip(*pairs))
    return item_index, als.build_item_genres(items, genre_ids, len(item_index), len(names))


def load_movielens(ratings_csv: Path, movies_csv: Path) -> MovieLens:
    """Load a ratings file with the genres of every movie in movies.csv."""
    item_index, genres = read_genres(movies_csv)
    user_ids, movie_ids, ratings = read_ratings(ratings_csv)
    user_index = {user_id: idx for idx, user_id in enumerate(np.unique(user_ids).tolist())}
    users = np.array([user_index[user_id] for user_id in user_ids.tolist()])
    items = np.array([item_index[movie_id] for movie_id in movie_ids.tolist()])
    matrix = als.build_rating_matrix(users, items, ratings, len(user_index), len(item_index))
    return MovieLens(matrix, genres, user_index, item_index)


@pytest.fixture(scope="session")
def movielens() -> MovieLens:
    """All of ml-latest-small with its genres."""
    root = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"
    return load_movielens(root / "ratings.csv", root / "movies.csv")


def random_problem(
    seed: int, n_users: int = 12, n_items: int = 9, n_genres: int = 4, density: float = 0.4
) -> tuple[als.RatingMatrix, als.ItemGenres]:
    """Return random ratings and genres, with one user and one item left without ratings.

    Item 0 has no genres, so the prior's empty case is covered too.
    """
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[-1, :] = False
    mask[:, -1] = False
    users, items = np.nonzero(mask)
    ratings = rng.integers(1, 11, size=users.size) / 2.0
    matrix = als.build_rating_matrix(users, items, ratings, n_users, n_items)

    genre_mask = rng.random((n_items, n_genres)) < 0.5
    genre_mask[0, :] = False
    genre_mask[1:, 0] = True
    genre_items, genre_ids = np.nonzero(genre_mask)
    return matrix, als.build_item_genres(genre_items, genre_ids, n_items, n_genres)
