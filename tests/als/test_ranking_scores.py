"""The one ranking score: b_m + c_n + u_m . v_n + support_weight * log(1 + count_n)."""

import numpy as np
import pytest

import als


def test_ranking_scores_hand_computed_for_one_user():
    item_bias = np.array([0.5, -0.25, 0.0], np.float32)
    item_factors = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
    counts = np.array([0, 1, 3], np.int32)
    scores = als.ranking_scores(0.1, np.array([2.0, -1.0], np.float32), item_bias, item_factors, counts, 0.5)
    expected = [0.1 + 0.5 + 2.0, 0.1 - 0.25 - 2.0 + 0.5 * np.log(2.0), 0.1 + 1.0 + 0.5 * np.log(4.0)]
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_ranking_scores_block_matches_single_users():
    rng = np.random.default_rng(0)
    item_bias = rng.normal(size=7).astype(np.float32)
    item_factors = rng.normal(size=(7, 3)).astype(np.float32)
    counts = rng.integers(0, 50, size=7).astype(np.int32)
    user_bias = rng.normal(size=4).astype(np.float32)
    user_factors = rng.normal(size=(4, 3)).astype(np.float32)
    block = als.ranking_scores(user_bias, user_factors, item_bias, item_factors, counts, 0.3)
    assert block.shape == (4, 7) and block.dtype == np.float32
    for row in range(4):
        single = als.ranking_scores(user_bias[row], user_factors[row], item_bias, item_factors, counts, 0.3)
        np.testing.assert_allclose(block[row], single, rtol=1e-5, atol=1e-5)


def test_ranking_support_lifts_a_widely_rated_item_over_a_barely_rated_one():
    # Same bias and factors; only the rating count differs.
    item_bias = np.zeros(2, np.float32)
    item_factors = np.ones((2, 1), np.float32)
    counts = np.array([1, 200], np.int32)
    scores = als.ranking_scores(0.0, np.ones(1, np.float32), item_bias, item_factors, counts, 0.4)
    assert als.top_n(scores, 1)[0] == 1
    unweighted = als.ranking_scores(0.0, np.ones(1, np.float32), item_bias, item_factors, counts, 0.0)
    assert als.top_n(unweighted, 1)[0] == 0  # a tie goes to the lower index


def test_ranking_scores_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="item_rating_count: must have shape"):
        als.ranking_scores(0.0, np.ones(2, np.float32), np.zeros(3, np.float32), np.ones((3, 2), np.float32),
                           np.zeros(2, np.int32), 0.1)
    with pytest.raises(ValueError, match="user_factors: must have shape"):
        als.ranking_scores(0.0, np.ones(5, np.float32), np.zeros(3, np.float32), np.ones((3, 2), np.float32),
                           np.zeros(3, np.int32), 0.1)


def test_ranking_scores_float32_matches_float64_reference():
    rng = np.random.default_rng(3)
    item_factors = rng.normal(0, 0.5, (500, 16)).astype(np.float32)
    item_bias = rng.normal(0, 0.3, 500).astype(np.float32)
    counts = rng.integers(0, 1000, 500)
    user = rng.normal(0, 0.5, 16).astype(np.float32)

    reference = (
        0.2 + item_bias.astype(np.float64) + item_factors.astype(np.float64) @ user.astype(np.float64)
        + 0.4 * np.log1p(counts)
    )
    scores = als.ranking_scores(0.2, user, item_bias, item_factors, counts, 0.4)
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-5)

    support = als.item_support(counts)
    with_support = als.ranking_scores(0.2, user, item_bias, item_factors, counts, 0.4, support=support)
    np.testing.assert_array_equal(with_support, scores)


def test_support_weight_grows_with_rating_count():
    weights = als.support_weights(0.6, 4.0, np.array([0, 1, 4, 12, 1000]))

    np.testing.assert_allclose(weights, [0.0, 0.6 / 5, 0.3, 0.6 * 12 / 16, 0.6 * 1000 / 1004])
    np.testing.assert_array_equal(als.support_weights(0.6, 0.0, np.array([0, 3])), [0.6, 0.6])
    with pytest.raises(ValueError, match="user_rating_count: must be >= 0, got -1"):
        als.support_weights(0.6, 4.0, np.array([2, -1]))


def test_block_scores_use_per_user_weights():
    rng = np.random.default_rng(5)
    item_factors = rng.normal(0, 0.5, (300, 8)).astype(np.float32)
    item_bias = rng.normal(0, 0.3, 300).astype(np.float32)
    counts = rng.integers(0, 500, 300)
    users = rng.normal(0, 0.5, (3, 8)).astype(np.float32)
    biases = np.array([0.1, -0.2, 0.3], np.float32)
    weights = np.array([0.0, 0.25, 0.8])

    block = als.ranking_scores(biases, users, item_bias, item_factors, counts, weights)

    for row in range(3):
        single = als.ranking_scores(float(biases[row]), users[row], item_bias, item_factors, counts, weights[row])
        np.testing.assert_allclose(block[row], single, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match=r"support_weight: must be a number or one weight per user \(3\)"):
        als.ranking_scores(biases, users, item_bias, item_factors, counts, weights[:2])
