"""Top-N lists against a plain numpy ranking of every item."""

from __future__ import annotations

import numpy as np
import pytest

import als
import worker.lists
from worker.lists import USERS_PER_BLOCK, top_n_lists


def reference_lists(user_bias, user_factors, item_bias, item_factors, seen, n, counts, support_weight):
    """Score every item in float32 as ranking_scores does, sort fully, keep the best n unseen."""
    scores = als.ranking_scores(user_bias, user_factors, item_bias, item_factors, counts, support_weight)
    width = min(n, item_factors.shape[0])
    indices = np.full((len(seen), width), -1, np.int64)
    best_scores = np.full((len(seen), width), -np.inf, np.float32)
    for row, rated in enumerate(seen):
        candidates = np.setdiff1d(np.arange(item_factors.shape[0]), rated)
        order = np.lexsort((candidates, -scores[row, candidates]))[:width]
        indices[row, : len(order)] = candidates[order]
        best_scores[row, : len(order)] = scores[row, candidates[order]]
    return indices, best_scores


def random_model(rng, users: int, items: int, k: int = 4):
    return (
        rng.normal(size=users).astype(np.float32),
        rng.normal(size=(users, k)).astype(np.float32),
        rng.normal(size=items).astype(np.float32),
        rng.normal(size=(items, k)).astype(np.float32),
        rng.integers(0, 50, items).astype(np.int32),
    )


@pytest.mark.parametrize("n", [1, 5, 40, 60])
def test_lists_match_full_sort(n):
    rng = np.random.default_rng(n)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, USERS_PER_BLOCK + 7, 50)
    seen = [np.sort(rng.choice(50, rng.integers(0, 50), replace=False)).astype(np.int32)
            for _ in range(user_bias.shape[0])]

    indices, scores = top_n_lists(user_bias, user_factors, item_bias, item_factors, seen, n,
                                  item_rating_count=counts, support_weight=0.1)
    expected_indices, expected_scores = reference_lists(
        user_bias, user_factors, item_bias, item_factors, seen, n, counts, 0.1)

    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("chunk", [7, 16, 33])
def test_lists_match_full_sort_across_chunks(chunk, monkeypatch):
    monkeypatch.setattr(worker.lists, "ITEMS_PER_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, 20, 300)
    # Unsorted seen items, some in every chunk, and a user who rated nothing.
    seen = [rng.choice(300, rng.integers(0, 200), replace=False).astype(np.int32) for _ in range(19)]
    seen.append(np.zeros(0, np.int32))
    weights = als.support_weights(0.5, 4.0, rng.integers(0, 30, 20))

    indices, scores = top_n_lists(user_bias, user_factors, item_bias, item_factors, seen, 10,
                                  item_rating_count=counts, support_weight=weights)
    expected_indices, expected_scores = reference_lists(
        user_bias, user_factors, item_bias, item_factors, seen, 10, counts, weights)

    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


def test_lists_reject_mismatched_shapes():
    rng = np.random.default_rng(4)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, 3, 8)
    with pytest.raises(ValueError, match=r"item_bias, item_rating_count: must have shape \(8,\)"):
        top_n_lists(user_bias, user_factors, item_bias[:5], item_factors, [np.zeros(0, np.int32)] * 3, 2,
                    item_rating_count=counts, support_weight=0.0)
    with pytest.raises(ValueError, match=r"support_weight: must be a number or one weight per user \(3\)"):
        top_n_lists(user_bias, user_factors, item_bias, item_factors, [np.zeros(0, np.int32)] * 3, 2,
                    item_rating_count=counts, support_weight=np.ones(2))


def test_lists_reject_bad_n_and_float_seen():
    rng = np.random.default_rng(5)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, 2, 8)
    with pytest.raises(ValueError, match=r"n: must be a non-negative integer, got -1"):
        top_n_lists(user_bias, user_factors, item_bias, item_factors, [np.zeros(0, np.int32)] * 2, -1,
                    item_rating_count=counts, support_weight=0.0)
    with pytest.raises(ValueError, match=r"seen: item indices must be integers, got dtype float64"):
        top_n_lists(user_bias, user_factors, item_bias, item_factors, [np.array([1.0]), np.array([2.0])], 3,
                    item_rating_count=counts, support_weight=0.0)


def test_equal_scores_ordered_by_item_index():
    item_factors = np.zeros((6, 2), np.float32)
    indices, scores = top_n_lists(
        np.zeros(1, np.float32), np.ones((1, 2), np.float32), np.zeros(6, np.float32), item_factors,
        [np.array([2], np.int32)], 4, item_rating_count=np.zeros(6, np.int32), support_weight=0.0,
    )
    assert indices.tolist() == [[0, 1, 3, 4]]
    assert scores.tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_user_who_rated_everything_gets_padding():
    rng = np.random.default_rng(3)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, 2, 5)
    seen = [np.arange(5, dtype=np.int32), np.array([1, 3], np.int32)]

    indices, scores = top_n_lists(user_bias, user_factors, item_bias, item_factors, seen, 4,
                                  item_rating_count=counts, support_weight=0.0)

    assert indices[0].tolist() == [-1, -1, -1, -1]
    assert np.isneginf(scores[0]).all()
    assert sorted(indices[1, :3].tolist()) == [0, 2, 4]
    assert indices[1, 3] == -1


def test_lists_follow_read_only_view_of_changed_items():
    # Read-only views of writable arrays can still change under the ranking table's cache.
    rng = np.random.default_rng(4)
    user_bias, user_factors, item_bias, item_factors, counts = random_model(rng, 3, 30)
    seen = [np.zeros(0, np.int32)] * 3
    views = [array.view() for array in (item_bias, item_factors, counts)]
    for view in views:
        view.flags.writeable = False
    top_n_lists(user_bias, user_factors, *views[:2], seen, 5, item_rating_count=views[2], support_weight=0.1)

    item_bias[:] = rng.normal(size=30)
    item_factors[:] = rng.normal(size=(30, 4))
    indices, scores = top_n_lists(user_bias, user_factors, *views[:2], seen, 5,
                                  item_rating_count=views[2], support_weight=0.1)
    expected_indices, expected_scores = reference_lists(
        user_bias, user_factors, item_bias, item_factors, seen, 5, counts, 0.1)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("n_items", [17, 2049, 4097])
@pytest.mark.parametrize("n_users", [1, 3])
def test_identical_items_ordered_by_index(n_users, n_items):
    rng = np.random.default_rng(n_items + n_users)
    item_factors = np.tile(rng.standard_normal(16).astype(np.float32), (n_items, 1))

    indices, scores = top_n_lists(
        np.zeros(n_users, np.float32), rng.standard_normal((n_users, 16)).astype(np.float32),
        np.zeros(n_items, np.float32), item_factors, [np.zeros(0, np.int32)] * n_users, 10,
        item_rating_count=np.zeros(n_items, np.int64), support_weight=0.0,
    )

    for row in range(n_users):
        assert indices[row].tolist() == list(range(10))
        assert len(set(scores[row].tolist())) == 1
