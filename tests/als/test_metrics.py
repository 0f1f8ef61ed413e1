import math

import numpy as np
import pytest

from als import ALSModel, mae, model_rmse, ndcg_at_k, predict, recall_at_k, rmse


def test_rmse_and_mae_hand_computed():
    pred = np.array([3.0, 4.0, 2.5, 5.0])
    truth = np.array([4.0, 4.0, 0.5, 4.0])
    # errors -1, 0, 2, 1: squares sum to 6, absolute values to 4.
    assert rmse(pred, truth) == pytest.approx(math.sqrt(6 / 4))
    assert mae(pred, truth) == pytest.approx(1.0)


def test_rmse_rejects_unequal_or_empty():
    with pytest.raises(ValueError, match="equal shapes"):
        rmse(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="must not be empty"):
        mae(np.zeros(0), np.zeros(0))


def test_ndcg_hand_computed():
    ranked = [np.array([7, 3, 9, 1]), np.array([5, 6, 8])]
    relevant = [np.array([3, 1, 4]), np.array([5])]
    # User 0, k=3: a hit at position 1 only, so DCG = 1/log2(3). Three relevant items give
    # IDCG = 1 + 1/log2(3) + 1/2. User 1: a hit at position 0 and one relevant item, NDCG 1.
    user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5)
    assert ndcg_at_k(ranked, relevant, k=3) == pytest.approx((user0 + 1.0) / 2)


def test_ndcg_ideal_uses_min_of_k_and_relevant():
    # Four relevant items but k=2: the ideal list has two hits, so a perfect top 2 scores 1.
    assert ndcg_at_k([np.array([1, 2, 9])], [np.array([1, 2, 3, 4])], k=2) == pytest.approx(1.0)


def test_recall_hand_computed():
    ranked = [np.array([7, 3, 9, 1]), np.array([5, 6, 8]), np.array([1])]
    relevant = [np.array([3, 1, 4]), np.array([6, 2]), np.array([], dtype=int)]
    # k=3: user 0 finds 1 of 3, user 1 finds 1 of 2; user 2 has nothing relevant and is left out.
    assert recall_at_k(ranked, relevant, k=3) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_ranking_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="one entry per user"):
        recall_at_k([np.array([1])], [], k=1)
    with pytest.raises(ValueError, match="k: must be an integer >= 1, got 0"):
        ndcg_at_k([np.array([1])], [np.array([1])], k=0)
    with pytest.raises(ValueError, match="every user's list is empty"):
        ndcg_at_k([np.array([1])], [np.array([], dtype=int)], k=1)


def random_model(seed: int, n_users: int, n_items: int, factors: int) -> ALSModel:
    """Return a model whose predictions spread well beyond the 0.5 to 5 rating scale."""
    rng = np.random.default_rng(seed)
    return ALSModel(
        global_mean=3.5,
        user_factors=rng.normal(0, 1, (n_users, factors)).astype(np.float32),
        user_bias=rng.normal(0, 1, n_users).astype(np.float32),
        item_factors=rng.normal(0, 1, (n_items, factors)).astype(np.float32),
        item_bias=rng.normal(0, 1, n_items).astype(np.float32),
        genre_factors=np.zeros((0, factors), np.float32),
    )


def test_model_rmse_matches_clipped_predict():
    # More ratings than one parallel chunk of the kernel, so the partial sums are combined.
    rng = np.random.default_rng(3)
    model = random_model(3, n_users=300, n_items=200, factors=5)
    users = rng.integers(0, 300, 70_000)
    items = rng.integers(0, 200, 70_000)
    ratings = rng.integers(1, 11, 70_000).astype(np.float32) / 2
    predictions = np.clip(predict(model, users, items), 0.5, 5.0)
    assert (predictions == 0.5).any()
    assert (predictions == 5.0).any()

    expected = rmse(predictions, ratings)
    assert model_rmse(model, users, items, ratings, 0.5, 5.0) == pytest.approx(expected, rel=1e-9)


def test_model_rmse_empty_is_zero():
    model = random_model(4, n_users=3, n_items=2, factors=2)
    empty = np.zeros(0, np.int64)
    assert model_rmse(model, empty, empty, np.zeros(0, np.float32), 0.5, 5.0) == 0.0


def test_model_rmse_rejects_bad_input():
    model = random_model(5, n_users=3, n_items=2, factors=2)
    ratings = np.array([4.0, 3.0], np.float32)
    with pytest.raises(ValueError, match=r"item_idx: must be in \[0, 2\), got 2"):
        model_rmse(model, np.array([0, 1]), np.array([0, 2]), ratings, 0.5, 5.0)
    with pytest.raises(ValueError, match="equal lengths"):
        model_rmse(model, np.array([0, 1]), np.array([0, 1]), ratings[:1], 0.5, 5.0)
    with pytest.raises(ValueError, match="rating_min, rating_max"):
        model_rmse(model, np.array([0, 1]), np.array([0, 1]), ratings, 5.0, 0.5)
