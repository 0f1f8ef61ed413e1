"""The refresh job's work: fold-in against the snapshot, guarded writes to Redis."""

from __future__ import annotations

import numpy as np
import pytest

import als
from store import keys
from store.snapshots import SnapshotStore, model_of
from store.user_state import read_user_state
from worker.refresh import merge_sorted_ratings, refresh_users
from worker.retrain import run_retrain

ROWS = [(f"u{u}", str(i), float(1 + (u + i) % 5), 1000 + 10 * u + i) for u in range(8) for i in (1, 2, 3)]


@pytest.fixture
def published(tiny_catalogue, redis_client):
    catalogue = tiny_catalogue(ROWS)
    run_retrain(catalogue.settings, redis_client, als.ALSConfig(factors=3, epochs=4))
    return SnapshotStore(catalogue.settings.snapshots_dir).open()


def test_refresh_matches_fold_in(published, redis_client):
    written = refresh_users(redis_client, published, {"new": (["1", "3"], [5.0, 1.0])}, seq=7, top_n=10)

    assert written == 1
    model, config = model_of(published)
    bias, factors = als.fold_in(np.array([0, 2], np.int32), np.array([5.0, 1.0], np.float32), model, config)
    state = read_user_state(redis_client, "new")
    assert state.version == published.version
    assert state.seq == 7
    assert state.bias == pytest.approx(bias, abs=1e-6)
    np.testing.assert_allclose(state.factors, factors, atol=1e-6)
    assert sorted(state.seen_idx.tolist()) == [0, 2]


def test_refresh_list_excludes_rated_items(published, redis_client):
    refresh_users(redis_client, published, {"new": (["1", "3"], [5.0, 1.0])}, seq=7, top_n=10)
    listed = {member.decode() for member in redis_client.zrange(keys.recs_key("new"), 0, -1)}
    assert listed == {"2", "4"}


def test_refresh_ignores_items_unknown_to_snapshot(published, redis_client):
    written = refresh_users(
        redis_client, published, {"new": (["1", "not-in-snapshot"], [4.0, 2.0])}, seq=3, top_n=10
    )
    assert written == 1
    state = read_user_state(redis_client, "new")
    assert state.seen_idx.tolist() == [0]


def test_stale_refresh_does_not_overwrite(published, redis_client):
    refresh_users(redis_client, published, {"new": (["1"], [5.0])}, seq=9, top_n=10)
    before = redis_client.zrange(keys.recs_key("new"), 0, -1, withscores=True)

    written = refresh_users(redis_client, published, {"new": (["1", "2"], [1.0, 1.0])}, seq=8, top_n=10)

    assert written == 0
    assert read_user_state(redis_client, "new").seq == 9
    assert redis_client.zrange(keys.recs_key("new"), 0, -1, withscores=True) == before


def test_refresh_of_user_without_known_ratings(published, redis_client):
    written = refresh_users(redis_client, published, {"new": (["unknown"], [4.0])}, seq=1, top_n=2)
    assert written == 1
    state = read_user_state(redis_client, "new")
    assert state.seen_idx.size == 0
    assert redis_client.zcard(keys.recs_key("new")) == 2


def test_merge_sorted_ratings_new_wins():
    items, stars = merge_sorted_ratings(
        np.array([1, 4, 7], np.int32), np.array([1.0, 4.0, 7.0], np.float32),
        np.array([0, 4, 9], np.int32), np.array([0.5, 4.5, 9.5], np.float32),
    )

    assert items.tolist() == [0, 1, 4, 7, 9]
    assert stars.tolist() == [0.5, 1.0, 4.5, 7.0, 9.5]


def test_merge_sorted_ratings_empty_sides():
    items, stars = merge_sorted_ratings(
        np.zeros(0, np.int32), np.zeros(0, np.float32), np.array([3], np.int32), np.array([2.0], np.float32)
    )
    assert items.tolist() == [3]

    items, stars = merge_sorted_ratings(
        np.array([3], np.int32), np.array([2.0], np.float32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    )
    assert items.tolist() == [3]
    assert stars.tolist() == [2.0]


def test_newer_only_matches_complete_ratings(published, redis_client):
    # u2 rated items 1, 2 and 3 in training; it now changes item 2 and the snapshot has no other.
    start, stop = published.seen_indptr[published.user_index("u2")], published.seen_indptr[published.user_index("u2") + 1]
    trained = dict(zip(published.item_ids[published.seen_indices[start:stop]].tolist(),
                       published.seen_ratings[start:stop].tolist()))
    complete = {**trained, "2": 0.5}

    refresh_users(redis_client, published, {"u2": (["2"], [0.5])}, seq=9, top_n=10, newer_only=[True])
    newer = read_user_state(redis_client, "u2")
    redis_client.flushdb()
    refresh_users(redis_client, published, {"u2": (list(complete), list(complete.values()))}, seq=9, top_n=10)
    full = read_user_state(redis_client, "u2")

    assert trained["2"] != 0.5
    assert newer.bias == full.bias
    np.testing.assert_array_equal(newer.factors, full.factors)
    assert newer.seen_idx.tolist() == full.seen_idx.tolist()


def test_newer_only_for_user_missing_from_snapshot(published, redis_client):
    refresh_users(redis_client, published, {"fresh": (["3", "1"], [1.0, 5.0])}, seq=9, top_n=10,
                  newer_only=[True])

    model, config = model_of(published)
    bias, factors = als.fold_in(np.array([0, 2], np.int32), np.array([5.0, 1.0], np.float32), model, config)
    state = read_user_state(redis_client, "fresh")
    assert state.bias == pytest.approx(bias, abs=1e-6)
    np.testing.assert_allclose(state.factors, factors, atol=1e-6)


def test_newer_only_needs_training_ratings(published, redis_client):
    published.seen_ratings = None

    with pytest.raises(ValueError, match="stores no training ratings"):
        refresh_users(redis_client, published, {"u2": (["2"], [0.5])}, seq=9, top_n=10, newer_only=[True])
