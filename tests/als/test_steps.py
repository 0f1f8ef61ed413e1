"""Every block update is an exact minimiser, so the full loss never goes up."""

import numpy as np
import pytest

import als
from tests.als.conftest import random_problem

# Storing a float64 solution as float32 moves the loss by rounding only, far below this.
RELATIVE_SLACK = 1e-6


def assert_steps_never_increase_loss(matrix, genres, config, epochs):
    model = als.init_model(matrix, genres, config, global_mean=float(matrix.user_ratings.mean()))
    steps = {
        "users": lambda: als.step_users(matrix, model, config),
        "items": lambda: als.step_items(matrix, model, genres, config),
        "genres": lambda: als.step_genres(model, genres, config),
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


def test_steps_never_increase_loss_on_movielens(movielens):
    config = als.ALSConfig(factors=12, reg_factors=10.0, reg_bias=3.0, reg_genre=5.0, reg_count_exponent=0.0)
    assert_steps_never_increase_loss(movielens.matrix, movielens.genres, config, epochs=4)


def test_steps_never_increase_loss_on_movielens_without_genres(movielens):
    config = als.ALSConfig(factors=8, reg_factors=10.0, reg_bias=3.0, use_genres=False)
    assert_steps_never_increase_loss(movielens.matrix, movielens.genres, config, epochs=3)


@pytest.mark.parametrize("seed", range(5))
def test_steps_never_increase_loss_on_random_data(seed):
    matrix, genres = random_problem(seed, n_users=20, n_items=15, n_genres=5)
    rng = np.random.default_rng(seed)
    config = als.ALSConfig(
        factors=int(rng.integers(1, 6)),
        reg_factors=float(rng.uniform(0.1, 5)),
        reg_bias=float(rng.uniform(0.1, 5)),
        reg_genre=float(rng.uniform(0.1, 5)),
        reg_count_exponent=0.0,
        seed=seed,
        init_scale=1.0,
    )
    assert_steps_never_increase_loss(matrix, genres, config, epochs=6)


def test_compute_loss_hand_computed():
    # One user, one item, one genre, K = 1: every term can be written out.
    matrix = als.build_rating_matrix(np.array([0]), np.array([0]), np.array([4.0]), 1, 1)
    genres = als.build_item_genres(np.array([0]), np.array([0]), 1, 1)
    config = als.ALSConfig(factors=1, reg_factors=2.0, reg_bias=3.0, reg_genre=5.0)
    model = als.ALSModel(
        global_mean=3.0,
        user_factors=np.array([[0.5]], np.float32),
        user_bias=np.array([0.25], np.float32),
        item_factors=np.array([[2.0]], np.float32),
        item_bias=np.array([-0.5], np.float32),
        genre_factors=np.array([[1.5]], np.float32),
    )
    # Prediction 3 + 0.25 - 0.5 + 1 = 3.75, error 0.25. Prior g = 1.5, so |v - g|^2 = 0.25.
    expected = 0.5 * 0.0625 + 1.0 * 0.25 + 1.0 * 0.25 + 1.5 * (0.0625 + 0.25) + 2.5 * 2.25
    assert als.compute_loss(matrix, model, genres, config) == pytest.approx(expected)

    plain = als.ALSConfig(factors=1, reg_factors=2.0, reg_bias=3.0, use_genres=False)
    expected_plain = 0.5 * 0.0625 + 1.0 * 0.25 + 1.0 * 4.0 + 1.5 * (0.0625 + 0.25)
    assert als.compute_loss(matrix, model, genres, plain) == pytest.approx(expected_plain)
