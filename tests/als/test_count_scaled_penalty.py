"""The count-scaled factor penalty tau * max(n, 1)^e keeps every update an exact minimiser."""

import numpy as np
import pytest

import als
from als.steps import count_weights
from tests.als.conftest import random_problem
from tests.als.test_steps import RELATIVE_SLACK


def assert_steps_never_increase_loss(matrix, genres, config, epochs):
    model = als.init_model(matrix, genres, config, global_mean=float(matrix.user_ratings.mean()))
    item_counts = matrix.item_counts()
    steps = {
        "users": lambda: als.step_users(matrix, model, config),
        "items": lambda: als.step_items(matrix, model, genres, config),
        "genres": lambda: als.step_genres(model, genres, config, item_counts),
    }
    loss = als.compute_loss(matrix, model, genres, config)
    first_loss = loss
    for epoch in range(epochs):
        for name, step in steps.items():
            step()
            new_loss = als.compute_loss(matrix, model, genres, config)
            assert new_loss <= loss * (1 + RELATIVE_SLACK), f"epoch {epoch} step {name}: {loss} -> {new_loss}"
            loss = new_loss
    assert loss < first_loss


@pytest.mark.parametrize("exponent", [0.5, 1.0])
def test_count_scaled_steps_never_increase_loss_on_movielens(movielens, exponent):
    config = als.ALSConfig(factors=8, reg_factors=0.5, reg_bias=5.0, reg_genre=5.0, reg_count_exponent=exponent)
    assert_steps_never_increase_loss(movielens.matrix, movielens.genres, config, epochs=3)


@pytest.mark.parametrize("seed", range(4))
def test_count_scaled_steps_never_increase_loss_on_random_data(seed):
    matrix, genres = random_problem(seed, n_users=20, n_items=15, n_genres=5)
    rng = np.random.default_rng(seed)
    config = als.ALSConfig(
        factors=int(rng.integers(1, 6)),
        reg_factors=float(rng.uniform(0.1, 2)),
        reg_bias=float(rng.uniform(0.1, 5)),
        reg_genre=float(rng.uniform(0.1, 5)),
        reg_count_exponent=float(rng.uniform(0.2, 1.0)),
        seed=seed,
        init_scale=1.0,
    )
    assert_steps_never_increase_loss(matrix, genres, config, epochs=5)


def test_count_scaled_user_step_matches_numpy_solve():
    # Two users with 3 and 1 ratings, K = 2: the penalty of each is tau * n^e.
    matrix = als.build_rating_matrix(
        np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0]), np.array([4.0, 2.0, 5.0, 3.0]), 2, 3
    )
    genres = als.empty_item_genres(3)
    config = als.ALSConfig(factors=2, reg_factors=0.5, reg_bias=2.0, reg_count_exponent=1.0, use_genres=False)
    model = als.init_model(matrix, genres, config, global_mean=3.5)
    model.item_factors[:] = [[1.0, 0.5], [-0.5, 1.0], [0.3, -0.2]]
    model.item_bias[:] = [0.1, -0.2, 0.3]
    als.step_users(matrix, model, config)

    for user, items, ratings in ((0, [0, 1, 2], [4.0, 2.0, 5.0]), (1, [0], [3.0])):
        W = np.hstack([model.item_factors[items].astype(np.float64), np.ones((len(items), 1))])
        y = np.array(ratings) - 3.5 - model.item_bias[items]
        tau = 0.5 * len(items)
        A = W.T @ W + np.diag([tau, tau, 2.0])
        expected = np.linalg.solve(A, W.T @ y)
        np.testing.assert_allclose(model.user_factors[user], expected[:2], atol=1e-5)
        assert model.user_bias[user] == pytest.approx(expected[2], abs=1e-5)


def test_count_scaled_foldin_matches_user_half_step(movielens):
    config = als.ALSConfig(factors=6, reg_factors=0.3, reg_bias=5.0, reg_count_exponent=0.75, epochs=2)
    model = als.train(movielens.matrix, movielens.genres, config)
    stepped = model.copy()
    als.step_users(movielens.matrix, stepped, config)
    matrix = movielens.matrix
    for user in [0, 7, matrix.n_users - 1]:
        span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
        bias, factors = als.fold_in(matrix.user_items[span], matrix.user_ratings[span], model, config)
        assert bias == pytest.approx(float(stepped.user_bias[user]), abs=1e-5)
        np.testing.assert_allclose(factors, stepped.user_factors[user], atol=1e-5)


def test_count_weights_floor_at_one_rating():
    config = als.ALSConfig(reg_count_exponent=0.5)
    np.testing.assert_allclose(count_weights(np.array([0, 1, 4, 9]), config), [1.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(count_weights(np.array([0, 9]), als.ALSConfig(reg_count_exponent=0)), [1.0, 1.0])


def test_count_scaled_loss_hand_computed():
    # One user with two ratings, one item per rating, no genres, K = 1.
    matrix = als.build_rating_matrix(np.array([0, 0]), np.array([0, 1]), np.array([4.0, 2.0]), 1, 2)
    genres = als.empty_item_genres(2)
    config = als.ALSConfig(factors=1, reg_factors=0.5, reg_bias=3.0, reg_count_exponent=1.0, use_genres=False)
    model = als.init_model(matrix, genres, config, global_mean=3.0)
    model.user_factors[:] = [[2.0]]
    model.user_bias[:] = [0.5]
    model.item_factors[:] = [[1.0], [-1.0]]
    model.item_bias[:] = [0.0, 0.25]
    # Residuals: 4 - (3 + 0.5 + 0 + 2) = -1.5 and 2 - (3 + 0.5 + 0.25 - 2) = 0.25.
    expected = 0.5 * (1.5**2 + 0.25**2)
    expected += 0.5 * 0.5 * 2 * 2.0**2  # the user has 2 ratings
    expected += 0.5 * 0.5 * (1 * 1.0**2 + 1 * 1.0**2)  # each item has 1 rating
    expected += 0.5 * 3.0 * (0.5**2 + 0.25**2)
    assert als.compute_loss(matrix, model, genres, config) == pytest.approx(expected)


def test_config_rejects_negative_count_exponent():
    with pytest.raises(ValueError, match="reg_count_exponent: must be >= 0 and finite, got -1"):
        als.ALSConfig(reg_count_exponent=-1)
    with pytest.raises(ValueError, match="support_weight: must be >= 0 and finite, got -0.5"):
        als.ALSConfig(support_weight=-0.5)
    with pytest.raises(ValueError, match="support_half_count: must be >= 0 and finite, got -2"):
        als.ALSConfig(support_half_count=-2)


def test_config_from_stored_keeps_older_models_unscaled():
    stored = {"factors": 4, "reg_factors": 11.0, "reg_bias": 3.0, "reg_genre": 5.0, "epochs": 30}
    config = als.ALSConfig.from_stored(stored)
    assert config.reg_count_exponent == 0.0
    assert config.support_weight == 0.0
    assert config.support_half_count == 0.0
    assert config.reg_factors == 11.0
    current = als.ALSConfig(support_weight=0.3, reg_count_exponent=0.75)
    assert als.ALSConfig.from_stored(current.to_dict()) == current
