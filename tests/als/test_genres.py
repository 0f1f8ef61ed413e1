"""The genre-factor update against a brute-force minimisation of the loss."""

import numpy as np
import pytest

import als
from tests.als.conftest import random_problem


def genre_loss(genre_factors, item_factors, weights, tau, beta):
    """The part of the loss that depends on the genre factors, in float64.

    weights: dense (N, G) matrix with 1/sqrt|G_n| where item n has genre k, so the priors
    are weights @ genre_factors.
    """
    difference = item_factors - weights @ genre_factors
    return 0.5 * tau * np.sum(difference**2) + 0.5 * beta * np.sum(genre_factors**2)


def brute_force_sweep(genre_factors, item_factors, weights, tau, beta, step=1e-3):
    """Minimise over f_0, f_1, ... in turn by Newton's method on finite differences.

    The loss is quadratic in f_k, so central differences give its gradient and Hessian
    exactly up to rounding, and one Newton step lands on the minimiser.
    """
    factors = genre_factors.copy()
    K = factors.shape[1]
    basis = np.eye(K) * step

    def loss_at(genre, vector):
        trial = factors.copy()
        trial[genre] = vector
        return genre_loss(trial, item_factors, weights, tau, beta)

    for genre in range(factors.shape[0]):
        center = factors[genre].copy()
        gradient = np.array(
            [(loss_at(genre, center + e) - loss_at(genre, center - e)) / (2 * step) for e in basis]
        )
        hessian = np.empty((K, K))
        for i in range(K):
            for j in range(K):
                hessian[i, j] = (
                    loss_at(genre, center + basis[i] + basis[j])
                    - loss_at(genre, center + basis[i] - basis[j])
                    - loss_at(genre, center - basis[i] + basis[j])
                    + loss_at(genre, center - basis[i] - basis[j])
                ) / (4 * step * step)
        factors[genre] = center - np.linalg.solve(hessian, gradient)
    return factors


def dense_weights(genres: als.ItemGenres) -> np.ndarray:
    weights = np.zeros((genres.n_items, genres.n_genres))
    for item in range(genres.n_items):
        row = genres.indices[genres.indptr[item]:genres.indptr[item + 1]]
        if row.size:
            weights[item, row] = 1.0 / np.sqrt(row.size)
    return weights


@pytest.mark.parametrize(("tau", "beta"), [(2.0, 2.0), (0.5, 3.0), (7.0, 0.25)])
def test_genre_step_matches_brute_force(tau, beta):
    matrix, genres = random_problem(6, n_items=7, n_genres=4)
    config = als.ALSConfig(factors=2, reg_factors=tau, reg_genre=beta, reg_count_exponent=0.0)
    model = als.init_model(matrix, genres, config, global_mean=3.0)
    rng = np.random.default_rng(2)
    model.item_factors[:] = rng.normal(0, 1, model.item_factors.shape)
    model.genre_factors[:] = rng.normal(0, 1, model.genre_factors.shape)

    expected = brute_force_sweep(
        model.genre_factors.astype(np.float64),
        model.item_factors.astype(np.float64),
        dense_weights(genres),
        tau,
        beta,
    )
    als.step_genres(model, genres, config)

    np.testing.assert_allclose(model.genre_factors, expected, atol=1e-5)


def test_genre_step_is_noop_without_genres_enabled():
    matrix, genres = random_problem(6)
    config = als.ALSConfig(factors=2, use_genres=False)
    model = als.init_model(matrix, genres, config, global_mean=3.0)
    model.genre_factors[:] = 1.5
    als.step_genres(model, genres, config)
    assert np.all(model.genre_factors == 1.5)


def test_genre_without_items_goes_to_zero():
    genres = als.build_item_genres(np.array([0, 1]), np.array([0, 0]), 2, 2)
    matrix = als.build_rating_matrix(np.array([0]), np.array([0]), np.array([4.0]), 1, 2)
    config = als.ALSConfig(factors=2, reg_count_exponent=0.0)
    model = als.init_model(matrix, genres, config, global_mean=3.0)
    model.genre_factors[1] = 5.0
    als.step_genres(model, genres, config)
    assert np.all(model.genre_factors[1] == 0.0)


def test_build_item_genres_sorted_and_validated():
    genres = als.build_item_genres(np.array([2, 0, 2, 0]), np.array([1, 3, 0, 1]), 4, 4)
    assert genres.indptr.tolist() == [0, 2, 2, 4, 4]
    assert genres.indices.tolist() == [1, 3, 0, 1]
    indptr, items = genres.by_genre()
    assert indptr.tolist() == [0, 1, 3, 3, 4]
    assert items.tolist() == [2, 0, 2, 0]

    with pytest.raises(ValueError, match=r"pair \(2, 1\) occurs more than once"):
        als.build_item_genres(np.array([2, 2]), np.array([1, 1]), 4, 4)
    with pytest.raises(ValueError, match=r"genre_idx: must be in \[0, 4\), got 4"):
        als.build_item_genres(np.array([2]), np.array([4]), 4, 4)


def test_empty_item_genres():
    genres = als.empty_item_genres(3)
    assert genres.n_items == 3
    assert genres.n_genres == 0
    assert als.item_prior(np.zeros((0, 4), np.float32), genres).shape == (3, 4)
