import numpy as np
import pytest

import als


def small_model() -> als.ALSModel:
    return als.ALSModel(
        global_mean=3.5,
        user_factors=np.array([[1.0, 0.0], [0.5, 2.0]], np.float32),
        user_bias=np.array([0.25, -0.5], np.float32),
        item_factors=np.array([[2.0, 1.0], [0.0, -1.0], [1.0, 1.0]], np.float32),
        item_bias=np.array([0.1, 0.2, -0.3], np.float32),
        genre_factors=np.zeros((0, 2), np.float32),
    )


def test_predict_known_pairs():
    scores = als.predict(small_model(), np.array([0, 1]), np.array([0, 2]))
    assert scores.dtype == np.float64
    np.testing.assert_allclose(scores, [3.5 + 0.25 + 0.1 + 2.0, 3.5 - 0.5 - 0.3 + 2.5], rtol=1e-6)


def test_predict_unknown_user_and_item():
    scores = als.predict(small_model(), np.array([-1, 1, -1]), np.array([1, -1, -1]))
    assert not np.isnan(scores).any()
    np.testing.assert_allclose(scores, [3.5 + 0.2, 3.5 - 0.5, 3.5], rtol=1e-6)


def test_predict_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"item_idx: must be -1 \(unknown\) or in \[0, 3\), got 3"):
        als.predict(small_model(), np.array([0]), np.array([3]))
    with pytest.raises(ValueError, match=r"user_idx: .* got -2"):
        als.predict(small_model(), np.array([-2]), np.array([0]))


def test_top_n_ties_go_to_lower_index():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5])
    assert als.top_n(scores, 4).tolist() == [1, 3, 2, 4]
    assert als.top_n(scores, 1).tolist() == [1]


def test_top_n_exclude():
    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0])
    assert als.top_n(scores, 2, exclude=np.array([1, 2])).tolist() == [3, 4]


def test_top_n_more_than_candidates():
    scores = np.array([0.5, -np.inf, 2.0])
    assert als.top_n(scores, 10).tolist() == [2, 0, 1]
    assert als.top_n(scores, 10, exclude=np.array([0, 2])).tolist() == [1]
    assert als.top_n(scores, 0).tolist() == []
    assert als.top_n(np.zeros(0), 3).tolist() == []


def test_top_n_matches_full_sort_on_random_scores():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 20, size=500).astype(np.float64)
    exclude = np.sort(rng.choice(500, size=40, replace=False))
    expected = [i for i in np.lexsort((np.arange(500), -scores)) if i not in set(exclude)][:37]
    assert als.top_n(scores, 37, exclude=exclude).tolist() == expected


def test_top_n_rejects_bad_input():
    with pytest.raises(ValueError, match="scores: must not contain NaN, got one at index 1"):
        als.top_n(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match=r"exclude: must be in \[0, 2\), got 2"):
        als.top_n(np.array([1.0, 2.0]), 1, exclude=np.array([2]))
    with pytest.raises(ValueError, match="n: must be a non-negative integer, got -1"):
        als.top_n(np.array([1.0]), -1)
