"""A tiny catalogue in a fresh DuckDB file, for retrain and refresh tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from store.database import Database
from store.movielens import load_ratings_and_movies
from store.settings import Settings

MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,Jumanji (1995),Adventure|Children|Fantasy
3,Heat (1995),Action|Crime|Thriller
4,"Cold Catalogue Movie, The (2020)",Animation|Children
"""


@dataclass
class TinyCatalogue:
    settings: Settings


@pytest.fixture
def tiny_catalogue(tmp_path):
    """Write a ratings file and a movies file, load them, and return settings for that directory."""

    def load(ratings_rows: list[tuple[str, str, float, int]]) -> TinyCatalogue:
        ratings = tmp_path / "ratings.csv"
        ratings.write_text(
            "userId,movieId,rating,timestamp\n"
            + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings_rows)
        )
        movies = tmp_path / "movies.csv"
        movies.write_text(MOVIES_CSV)
        settings = Settings(data_dir=tmp_path / "data")
        settings.data_dir.mkdir()
        with Database(settings.database_path) as database:
            load_ratings_and_movies(database, ratings, movies)
        return TinyCatalogue(settings)

    return load
