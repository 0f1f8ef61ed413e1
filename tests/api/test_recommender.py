"""Tests for the query module on the small hand-built snapshot (see tests/store/snapshot_factory.py).

Expected rankings are worked out by hand from the factory's biases and factors, with
score = b_m + c_n + u_m.v_n.
"""

from __future__ import annotations

from pathlib import Path

import fakeredis
import numpy as np
import pytest

import als
from api import Recommendation, Recommender
from store.user_state import write_user_state
from store.errors import InvalidQueryError, SnapshotNotFoundError, UnknownItemError
from store.settings import Settings
from store.snapshots import SnapshotStore, model_of
from tests.store.snapshot_factory import make_snapshot_data


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def store(settings: Settings) -> SnapshotStore:
    store = SnapshotStore(settings.snapshots_dir)
    store.publish(make_snapshot_data())
    return store


@pytest.fixture
def recommender(settings: Settings, store: SnapshotStore) -> Recommender:
    return Recommender(settings)


def test_recommend_excludes_seen(recommender: Recommender) -> None:
    result = recommender.recommend("alice")

    # alice rated items 10 and 40. 20 and 60 tie at 0.3, so the lower item_idx (20) comes first.
    assert result.item_ids == ["30", "20", "60", "50"]
    assert [item.score for item in result] == pytest.approx([1.6, 0.3, 0.3, 0.2], abs=1e-6)
    assert result.personalised is True
    assert result.source == "snapshot"
    assert result.version == 1


def test_recommend_including_seen(recommender: Recommender) -> None:
    result = recommender.recommend("alice", exclude_seen=False)

    assert result.item_ids == ["10", "30", "20", "60", "50", "40"]
    assert result[0].score == pytest.approx(2.5)
    assert result[5].score == pytest.approx(-1.3)


def test_recommend_item_fields(recommender: Recommender) -> None:
    first = recommender.recommend("alice", n=1)[0]

    assert first == Recommendation(item_id="30", title="Charlie (2003)", genres=["Action", "Drama"], score=first.score)
    assert len(recommender.recommend("alice", n=1)) == 1


def test_recommend_user_without_unseen_items(recommender: Recommender) -> None:
    # dave rated every item.
    assert recommender.recommend("dave").items == []
    assert len(recommender.recommend("dave", exclude_seen=False)) == 6


def test_recommend_genre_filter(recommender: Recommender) -> None:
    assert recommender.recommend("alice", genres=["Drama"]).item_ids == ["30", "60"]
    assert recommender.recommend("alice", genres=["Comedy", "Action"]).item_ids == ["30", "20", "60"]
    assert recommender.recommend("alice", genres="Comedy").item_ids == ["20", "60"]
    assert recommender.recommend("alice", genres=[]).item_ids == ["30", "20", "60", "50"]


def test_recommend_unknown_genre(recommender: Recommender) -> None:
    with pytest.raises(InvalidQueryError, match="unknown genre 'Horror', valid genres are: Action, Comedy, Drama"):
        recommender.recommend("alice", genres=["Drama", "Horror"])


def test_recommend_unknown_user_not_personalised(recommender: Recommender) -> None:
    result = recommender.recommend("zoe")

    # Ranked by item bias alone.
    assert result.item_ids == ["40", "10", "20", "60", "50", "30"]
    assert [item.score for item in result] == pytest.approx([0.5, 0.3, 0.1, 0.1, 0.0, -0.2], abs=1e-6)
    assert result.personalised is False
    assert result.source == "none"


def test_recommend_rejects_bad_n(recommender: Recommender) -> None:
    for n in (0, -3, 2.5, True):
        with pytest.raises(InvalidQueryError, match="n: must be an integer of at least 1"):
            recommender.recommend("alice", n=n)


def test_recommend_rejects_missing_user_id(recommender: Recommender) -> None:
    with pytest.raises(InvalidQueryError, match="user_id: must be a string or an integer, got None"):
        recommender.recommend(None)


def test_recommend_for_ratings_rejects_a_list(recommender: Recommender) -> None:
    with pytest.raises(InvalidQueryError, match="ratings: must be a mapping of item_id to rating, got list"):
        recommender.recommend_for_ratings([("1", 5.0)])


def test_recommend_uses_refolded_user(settings: Settings, store: SnapshotStore) -> None:
    client = fakeredis.FakeRedis()
    write_user_state(client, "alice", version=1, seq=4, bias=0.0, factors=np.array([0.0, 2.0]), seen_idx=np.array([1]))
    recommender = Recommender(settings, redis=client)

    result = recommender.recommend("alice")

    assert result.source == "refolded"
    assert result.personalised is True
    assert result.item_ids == ["30", "40", "10", "50", "60"]


def test_recommend_refolded_new_user(settings: Settings, store: SnapshotStore) -> None:
    # A user who first rated after the snapshot was trained exists only in Redis.
    client = fakeredis.FakeRedis()
    write_user_state(client, "erin", version=1, seq=9, bias=0.0, factors=np.array([-2.0, 0.0]), seen_idx=np.array([3]))
    recommender = Recommender(settings, redis=client)

    result = recommender.recommend("erin", n=2)

    assert result.source == "refolded"
    assert result.item_ids == ["20", "60"]


def test_recommend_ignores_state_of_other_version(settings: Settings, store: SnapshotStore) -> None:
    client = fakeredis.FakeRedis()
    write_user_state(client, "alice", version=2, seq=0, bias=0.0, factors=np.array([0.0, 2.0]), seen_idx=np.array([1]))
    recommender = Recommender(settings, redis=client)

    result = recommender.recommend("alice")

    assert result.source == "snapshot"
    assert result.item_ids == ["30", "20", "60", "50"]


def test_recommend_ignores_state_of_wrong_size(settings: Settings, store: SnapshotStore) -> None:
    client = fakeredis.FakeRedis()
    write_user_state(client, "alice", version=1, seq=0, bias=0.0, factors=np.zeros(3), seen_idx=np.array([1]))
    recommender = Recommender(settings, redis=client)

    assert recommender.recommend("alice").source == "snapshot"


def test_recommend_survives_redis_outage(settings: Settings, store: SnapshotStore) -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    write_user_state(client, "alice", version=1, seq=4, bias=0.0, factors=np.array([0.0, 2.0]), seen_idx=np.array([1]))
    recommender = Recommender(settings, redis=client)
    server.connected = False

    result = recommender.recommend("alice")

    assert result.source == "snapshot"
    assert result.item_ids == ["30", "20", "60", "50"]


def test_recommend_with_real_redis(settings: Settings, store: SnapshotStore, redis_client) -> None:
    write_user_state(redis_client, "alice", version=1, seq=4, bias=0.0, factors=np.array([0.0, 2.0]), seen_idx=np.array([1]))
    recommender = Recommender(settings, redis=redis_client)

    result = recommender.recommend("alice")

    assert result.source == "refolded"
    assert result.item_ids == ["30", "40", "10", "50", "60"]


def _numpy_fold_in(item_idx: list[int], ratings: list[float], reg_factors: float, reg_bias: float):
    """Minimise ½Σ(r - μ - b - c_n - u.v_n)² + reg_factors/2 |u|² + reg_bias/2 b² in closed form."""
    data = make_snapshot_data()
    V = np.asarray(data.item_factors, dtype=np.float64)[item_idx]
    X = np.hstack([np.ones((len(item_idx), 1)), V])
    target = np.asarray(ratings) - data.global_mean - np.asarray(data.item_bias, dtype=np.float64)[item_idx]
    penalty = np.diag([reg_bias] + [reg_factors] * V.shape[1])
    solution = np.linalg.solve(X.T @ X + penalty, X.T @ target)
    return solution[0], solution[1:]


def test_recommend_for_ratings_folds_in_visitor(recommender: Recommender) -> None:
    result = recommender.recommend_for_ratings({"10": 5.0, "40": 1.0, "999": 4.0})

    bias, factors = _numpy_fold_in([0, 3], [5.0, 1.0], reg_factors=0.1, reg_bias=1.0)
    data = make_snapshot_data()
    expected_scores = bias + data.item_bias + data.item_factors @ factors
    expected_order = [i for i in np.lexsort((np.arange(6), -expected_scores)) if i not in (0, 3)]

    assert result.ignored_item_ids == ["999"]
    assert result.source == "ratings"
    assert result.personalised is True
    assert result.item_ids == [data.item_ids[i] for i in expected_order]
    assert [item.score for item in result] == pytest.approx(expected_scores[expected_order], abs=1e-4)
    # Liking 10 (factors [1, 0]) and disliking 40 ([-1, 0]) puts 30 ([0.8, 0.6]) first.
    assert result.item_ids[0] == "30"


def test_recommend_for_ratings_genre_filter(recommender: Recommender) -> None:
    result = recommender.recommend_for_ratings({"10": 5.0}, genres=["Comedy"])

    assert set(result.item_ids) == {"20", "60"}


def test_recommend_for_ratings_only_unknown_items(recommender: Recommender) -> None:
    result = recommender.recommend_for_ratings({"998": 4.0, "999": 2.0}, n=3)

    assert result.personalised is False
    assert result.source == "none"
    assert result.ignored_item_ids == ["998", "999"]
    assert result.item_ids == ["40", "10", "20"]


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        ({"10": 7}, r"rating for item_id='10': must be between 0.5 and 5.0, got 7"),
        ({"10": 0.0}, r"rating for item_id='10': must be between 0.5 and 5.0, got 0.0"),
        ({"999": float("nan")}, r"rating for item_id='999': must be between 0.5 and 5.0, got nan"),
        ({"10": "five"}, r"rating for item_id='10': must be a number, got 'five'"),
        ({"10": 4.0, 10: 3.0}, r"ratings: item_id '10' is given twice"),
    ],
)
def test_recommend_for_ratings_rejects_bad_ratings(recommender: Recommender, ratings: dict, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        recommender.recommend_for_ratings(ratings)


def test_similar_items(recommender: Recommender) -> None:
    similar = recommender.similar_items("10")

    assert [item.item_id for item in similar] == ["30", "20", "50", "60", "40"]
    assert [item.score for item in similar] == pytest.approx([0.8, 0.0, 0.0, 0.0, -1.0], abs=1e-6)
    assert [item.item_id for item in recommender.similar_items("10", n=2)] == ["30", "20"]


def test_similar_items_unknown_item(recommender: Recommender) -> None:
    with pytest.raises(UnknownItemError) as raised:
        recommender.similar_items("999")

    assert isinstance(raised.value, KeyError)
    assert str(raised.value) == "item_id: '999' not found in snapshot version 1"


def test_predict_values(recommender: Recommender) -> None:
    # global mean 3.5; dave: b=0.4, u=[-1, 0.5]; item 10: c=0.3, v=[1, 0].
    assert recommender.predict("dave", "10") == pytest.approx(3.2)
    assert recommender.predict("alice", "10") == 5.0  # 6.0 clipped
    assert recommender.predict("zoe", "40") == pytest.approx(4.0)  # unknown user: μ + c_n
    assert recommender.predict("alice", "999") == pytest.approx(3.7)  # unknown item: μ + b_m
    assert recommender.predict("zoe", "999") == pytest.approx(3.5)


def test_predict_clips_low(settings: Settings) -> None:
    SnapshotStore(settings.snapshots_dir).publish(make_snapshot_data(global_mean=-3.0))
    recommender = Recommender(settings)

    assert recommender.predict("alice", "40") == 0.5
    assert recommender.predict("zoe", "999") == 0.5


def test_new_version_picked_up(settings: Settings, store: SnapshotStore, recommender: Recommender) -> None:
    assert recommender.recommend("zoe", n=1).item_ids == ["40"]

    item_bias = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.9], dtype=np.float32)
    store.publish(make_snapshot_data(item_bias=item_bias))
    after_publish = recommender.recommend("zoe", n=1)
    store.rollback(1)
    after_rollback = recommender.recommend("zoe", n=1)

    assert after_publish.version == 2
    assert after_publish.item_ids == ["60"]
    assert after_rollback.version == 1
    assert after_rollback.item_ids == ["40"]


def test_broken_new_version_keeps_old(settings: Settings, store: SnapshotStore, recommender: Recommender) -> None:
    store.publish(make_snapshot_data())
    path = store.version_path(2) / "item_factors.npy"
    path.write_bytes(path.read_bytes()[:-4])

    result = recommender.recommend("zoe", n=1)

    assert result.version == 1
    assert result.item_ids == ["40"]


def test_no_snapshot_then_published(settings: Settings) -> None:
    recommender = Recommender(settings)

    with pytest.raises(SnapshotNotFoundError, match="no snapshot published"):
        recommender.recommend("alice")
    SnapshotStore(settings.snapshots_dir).publish(make_snapshot_data())
    assert recommender.recommend("alice").item_ids == ["30", "20", "60", "50"]


def test_fold_in_matches_numpy_reference(recommender: Recommender) -> None:
    # Guards the wiring of the snapshot's hyperparameters into the fold-in.
    data = make_snapshot_data()
    model, config = model_of(data)

    bias, factors = als.fold_in(np.array([0, 3]), np.array([5.0, 1.0]), model, config)
    expected_bias, expected_factors = _numpy_fold_in([0, 3], [5.0, 1.0], reg_factors=0.1, reg_bias=1.0)

    assert bias == pytest.approx(expected_bias, abs=1e-4)
    np.testing.assert_allclose(factors, expected_factors, atol=1e-4)
