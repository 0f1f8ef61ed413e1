"""One-rating visitors get lists that look like what they rated, with the shipped defaults.

A model with the shipped defaults is trained on each of three rating sets (the random and the
temporal 80% training splits, and all of ml-latest-small), published as a snapshot, and asked
through the query module for visitors who rated one film five stars. The demo's version 1 is
the temporal one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import als
from api import Recommender
from evaluation.run import load_training_data, train_on
from store.settings import Settings
from store.snapshots import SnapshotStore
from worker.retrain import snapshot_data

pytestmark = pytest.mark.slow

TOY_STORY, STAR_WARS_IV = "1", "260"
DATA = Path(__file__).resolve().parents[2] / "data"


RATING_SETS = {
    "random80": DATA / "splits" / "ml-latest-small.random80.train.csv",
    "temporal80": DATA / "splits" / "ml-latest-small.temporal80.train.csv",
    "all": DATA / "ml-latest-small" / "ratings.csv",
}


@pytest.fixture(scope="module", params=sorted(RATING_SETS))
def recommender(request, tmp_path_factory) -> Recommender:
    settings = Settings(data_dir=tmp_path_factory.mktemp(f"visitors-{request.param}"))
    data = load_training_data(RATING_SETS[request.param], DATA / "ml-latest-small" / "movies.csv")
    config = als.ALSConfig()
    model = train_on(data, config)
    SnapshotStore(settings.snapshots_dir).publish(snapshot_data(data, model, config, {}, settings))
    return Recommender(settings)


def _count_with(recommendations, genres: set[str]) -> int:
    return sum(1 for item in recommendations.items if genres & set(item.genres))


def test_toy_story_visitor_gets_family_films(recommender: Recommender) -> None:
    recommendations = recommender.recommend_for_ratings({TOY_STORY: 5.0}, n=10)
    assert len(recommendations.items) == 10
    assert _count_with(recommendations, {"Children", "Animation"}) >= 6, [i.title for i in recommendations.items]


def test_star_wars_visitor_gets_science_fiction_and_adventure(recommender: Recommender) -> None:
    recommendations = recommender.recommend_for_ratings({STAR_WARS_IV: 5.0}, n=10)
    assert _count_with(recommendations, {"Sci-Fi", "Adventure"}) >= 6, [i.title for i in recommendations.items]
