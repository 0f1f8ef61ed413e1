"""The query module on a snapshot trained on the shipped MovieLens small data set."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import als
from api import Recommender
from store.settings import Settings
from store.snapshots import Snapshot, SnapshotData, SnapshotStore

pytestmark = pytest.mark.slow

TOY_STORY, TOY_STORY_2, A_BUGS_LIFE = "1", "3114", "2355"
STAR_WARS_IV, STAR_WARS_V, STAR_WARS_VI = "260", "1196", "1210"
# Toy Story 3, Finding Nemo, The Incredibles, Shrek, Monsters Inc., Up.
FAMILY_ANIMATION = {"78499", "6377", "8961", "4306", "4886", "68954"}
MOVIELENS_SMALL = Path(__file__).resolve().parents[2] / "data" / "ml-latest-small"


def _train_snapshot(movielens_dir: Path) -> SnapshotData:
    """Train a small model (16 factors, 8 epochs) on all ratings and pack it as snapshot data."""
    item_ids, titles, item_genre_names = [], [], []
    with open(movielens_dir / "movies.csv", newline="", encoding="utf-8") as movies:
        for row in csv.DictReader(movies):
            item_ids.append(row["movieId"])
            titles.append(row["title"])
            listed = row["genres"]
            item_genre_names.append([] if listed == "(no genres listed)" else listed.split("|"))
    genre_names = sorted({name for names in item_genre_names for name in names})
    genre_index = {name: k for k, name in enumerate(genre_names)}
    item_index = {item_id: n for n, item_id in enumerate(item_ids)}

    user_index: dict[str, int] = {}
    user_idx, item_idx, ratings = [], [], []
    with open(movielens_dir / "ratings.csv", newline="", encoding="utf-8") as rating_rows:
        for row in csv.DictReader(rating_rows):
            user_idx.append(user_index.setdefault(row["userId"], len(user_index)))
            item_idx.append(item_index[row["movieId"]])
            ratings.append(float(row["rating"]))

    matrix = als.build_rating_matrix(
        np.array(user_idx), np.array(item_idx), np.array(ratings, np.float32), len(user_index), len(item_ids)
    )
    pairs = [(n, genre_index[name]) for n, names in enumerate(item_genre_names) for name in names]
    genres = als.build_item_genres(
        np.array([n for n, _ in pairs]), np.array([k for _, k in pairs]), len(item_ids), len(genre_names)
    )
    config = als.ALSConfig(factors=16, epochs=8)
    model = als.train(matrix, genres, config)

    return SnapshotData(
        user_factors=model.user_factors,
        user_bias=model.user_bias,
        item_factors=model.item_factors,
        item_bias=model.item_bias,
        genre_factors=model.genre_factors,
        user_ids=np.array(list(user_index)),
        item_ids=np.array(item_ids),
        item_titles=np.array(titles),
        genre_names=np.array(genre_names),
        item_genres_indptr=genres.indptr,
        item_genres_indices=genres.indices,
        seen_indptr=matrix.user_indptr,
        seen_indices=matrix.user_items,
        item_rating_count=matrix.item_counts(),
        global_mean=model.global_mean,
        rating_min=0.5,
        rating_max=5.0,
        watermark=0,
        hyperparameters=config.to_dict(),
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose snapshots directory contains one version trained on MovieLens small."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("movielens"))
    SnapshotStore(settings.snapshots_dir).publish(_train_snapshot(MOVIELENS_SMALL))
    return settings


@pytest.fixture(scope="module")
def recommender(settings: Settings) -> Recommender:
    return Recommender(settings)


@pytest.fixture(scope="module")
def snapshot(settings: Settings) -> Snapshot:
    return SnapshotStore(settings.snapshots_dir).open()


def test_movielens_recommend_excludes_seen(recommender: Recommender, snapshot: Snapshot) -> None:
    seen = set(snapshot.item_ids[snapshot.seen_items(snapshot.user_index("1"))].tolist())

    result = recommender.recommend("1", n=50)

    assert len(result) == 50
    assert result.source == "snapshot"
    assert not seen & set(result.item_ids)
    scores = [item.score for item in result]
    assert scores == sorted(scores, reverse=True)


def test_movielens_star_wars_neighbours(recommender: Recommender) -> None:
    similar = [item.item_id for item in recommender.similar_items(STAR_WARS_IV, n=5)]

    assert STAR_WARS_V in similar
    assert STAR_WARS_VI in similar


def test_movielens_visitor_taste_moves_ranking(recommender: Recommender) -> None:
    # Among animated films, a visitor who loves three Pixar films should get more family
    # animation than one who hates them, because only the folded-in factors differ.
    rated = [TOY_STORY, TOY_STORY_2, A_BUGS_LIFE]
    fan = recommender.recommend_for_ratings(dict.fromkeys(rated, 5.0), n=10, genres=["Animation"])
    critic = recommender.recommend_for_ratings(dict.fromkeys(rated, 0.5), n=10, genres=["Animation"])

    assert not set(rated) & set(fan.item_ids)
    assert all("Animation" in item.genres for item in fan)
    assert len(FAMILY_ANIMATION & set(fan.item_ids)) > len(FAMILY_ANIMATION & set(critic.item_ids))


def test_movielens_predict_in_scale(recommender: Recommender, snapshot: Snapshot) -> None:
    rng = np.random.default_rng(0)
    user_ids = snapshot.user_ids[rng.integers(0, len(snapshot.user_ids), 200)].tolist()
    item_ids = snapshot.item_ids[rng.integers(0, len(snapshot.item_ids), 200)].tolist()

    predictions = [recommender.predict(user_id, item_id) for user_id, item_id in zip(user_ids, item_ids)]
    predictions += [recommender.predict("nobody", item_id) for item_id in item_ids[:20]]
    predictions += [recommender.predict(user_id, "no-such-item") for user_id in user_ids[:20]]

    assert all(np.isfinite(predictions))
    assert min(predictions) >= 0.5
    assert max(predictions) <= 5.0
