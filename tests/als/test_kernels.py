"""The half-steps against a slow, obvious numpy least-squares solution on tiny data."""

import numpy as np
import pytest

import als
from tests.als.conftest import random_problem


def reference_row(other_factors, other_bias, columns, ratings, global_mean, prior, reg_bias, reg_factors):
    """Minimise one row's loss as a stacked least-squares problem with np.linalg.lstsq.

    Unknowns (b, x): residuals y_c - b - w_c . x for each rated column, sqrt(gamma) b, and
    sqrt(tau) (x - prior).
    """
    K = other_factors.shape[1]
    w = other_factors[columns].astype(np.float64)
    y = ratings.astype(np.float64) - global_mean - other_bias[columns]
    design = np.vstack(
        [
            np.hstack([np.ones((len(columns), 1)), w]),
            np.hstack([[[np.sqrt(reg_bias)]], np.zeros((1, K))]),
            np.hstack([np.zeros((K, 1)), np.sqrt(reg_factors) * np.eye(K)]),
        ]
    )
    target = np.concatenate([y, [0.0], np.sqrt(reg_factors) * prior])
    solution = np.linalg.lstsq(design, target, rcond=None)[0]
    return solution[0], solution[1:]


def trained_model(matrix, genres, config):
    model = als.init_model(matrix, genres, config, global_mean=3.0)
    rng = np.random.default_rng(11)
    model.user_factors[:] = rng.normal(0, 0.5, model.user_factors.shape)
    model.user_bias[:] = rng.normal(0, 0.3, model.user_bias.shape)
    model.item_bias[:] = rng.normal(0, 0.3, model.item_bias.shape)
    model.genre_factors[:] = rng.normal(0, 0.5, model.genre_factors.shape)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_user_step_matches_numpy_reference(seed):
    matrix, genres = random_problem(seed)
    config = als.ALSConfig(factors=3, reg_factors=0.7, reg_bias=1.3, reg_genre=2.0, reg_count_exponent=0.0)
    model = trained_model(matrix, genres, config)
    before = model.copy()

    als.step_users(matrix, model, config)

    for user in range(matrix.n_users):
        span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
        bias, factors = reference_row(
            before.item_factors, before.item_bias, matrix.user_items[span],
            matrix.user_ratings[span], model.global_mean, np.zeros(3), 1.3, 0.7,
        )
        assert model.user_bias[user] == pytest.approx(bias, abs=1e-5)
        np.testing.assert_allclose(model.user_factors[user], factors, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_item_step_with_prior_matches_numpy_reference(seed):
    matrix, genres = random_problem(seed)
    config = als.ALSConfig(factors=3, reg_factors=0.7, reg_bias=1.3, reg_genre=2.0, reg_count_exponent=0.0)
    model = trained_model(matrix, genres, config)
    prior = als.item_prior(model.genre_factors, genres).astype(np.float64)
    assert np.abs(prior[1:]).max() > 0

    als.step_items(matrix, model, genres, config)

    for item in range(matrix.n_items):
        span = slice(matrix.item_indptr[item], matrix.item_indptr[item + 1])
        bias, factors = reference_row(
            model.user_factors, model.user_bias, matrix.item_users[span],
            matrix.item_ratings[span], model.global_mean, prior[item], 1.3, 0.7,
        )
        assert model.item_bias[item] == pytest.approx(bias, abs=1e-5)
        np.testing.assert_allclose(model.item_factors[item], factors, atol=1e-5)


def test_joint_solution_satisfies_separate_bias_formula():
    # At the joint optimum, b_m = sum (r - mu - c_n - u_m . v_n) / (|ratings of m| + gamma).
    matrix, genres = random_problem(4)
    config = als.ALSConfig(factors=3, reg_factors=0.7, reg_bias=1.3)
    model = trained_model(matrix, genres, config)
    als.step_users(matrix, model, config)

    for user in range(matrix.n_users):
        span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
        items = matrix.user_items[span]
        residual = (
            matrix.user_ratings[span] - model.global_mean - model.item_bias[items]
            - model.item_factors[items] @ model.user_factors[user]
        )
        expected = residual.sum() / (len(items) + 1.3)
        assert model.user_bias[user] == pytest.approx(expected, abs=1e-5)


def test_rows_without_ratings_get_exact_minimiser():
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3)
    model = trained_model(matrix, genres, config)
    unrated_user = matrix.n_users - 1
    unrated_item = matrix.n_items - 1

    als.step_users(matrix, model, config)
    als.step_items(matrix, model, genres, config)

    assert model.user_bias[unrated_user] == 0.0
    assert np.all(model.user_factors[unrated_user] == 0.0)
    assert model.item_bias[unrated_item] == 0.0
    prior = als.item_prior(model.genre_factors, genres)[unrated_item]
    assert np.abs(prior).max() > 0
    np.testing.assert_allclose(model.item_factors[unrated_item], prior, rtol=1e-6)


def test_item_prior_hand_computed():
    genres = als.build_item_genres(np.array([0, 0, 2]), np.array([0, 1, 1]), 3, 2)
    genre_factors = np.array([[1.0, 2.0], [3.0, -2.0]], np.float32)
    prior = als.item_prior(genre_factors, genres)
    np.testing.assert_allclose(prior, [[4 / np.sqrt(2), 0.0], [0.0, 0.0], [3.0, -2.0]], rtol=1e-6)


def test_nan_factor_raises_solve_error_naming_row():
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3)
    model = trained_model(matrix, genres, config)
    model.item_factors[2, 1] = np.nan
    first_rater = int(np.sort(matrix.item_users[matrix.item_indptr[2]:matrix.item_indptr[3]])[0])

    with pytest.raises(als.SolveError, match=rf"^user_idx {first_rater}: Cholesky solve"):
        als.step_users(matrix, model, config)
