"""The squared errors a half-step returns equal a separate pass over the ratings."""

import numpy as np
import pytest

import als
from als.kernels import TINY_PENALTY, squared_error_sum
from als.steps import loss_and_squared_error
from tests.als.conftest import random_problem


def squared_error_of(matrix: als.RatingMatrix, model: als.ALSModel) -> float:
    return squared_error_sum(
        matrix.user_indptr, matrix.user_items, matrix.user_ratings, model.user_factors,
        model.user_bias, model.item_factors, model.item_bias, model.global_mean,
    )


@pytest.mark.parametrize("factors", [8, 32])
def test_step_squared_error_movielens(movielens, factors):
    # Items of ml-latest-small have up to 329 ratings, so their sums span several tiles.
    config = als.ALSConfig(factors=factors, epochs=1)
    model = als.init_model(movielens.matrix, movielens.genres, config, global_mean=3.5)

    from_users = als.step_users(movielens.matrix, model, config)
    assert from_users == pytest.approx(squared_error_of(movielens.matrix, model), rel=1e-7)

    from_items = als.step_items(movielens.matrix, model, movielens.genres, config)
    assert from_items == pytest.approx(squared_error_of(movielens.matrix, model), rel=1e-7)


def test_step_squared_error_tiny_penalty():
    # Tiny penalties send rows with at most K + 1 ratings to the float64 solver.
    matrix, genres = random_problem(seed=5, n_users=40, n_items=30)
    config = als.ALSConfig(factors=4, epochs=1, reg_factors=TINY_PENALTY / 10, reg_bias=TINY_PENALTY / 10)
    model = als.init_model(matrix, genres, config, global_mean=3.0)

    from_users = als.step_users(matrix, model, config)
    assert from_users == pytest.approx(squared_error_of(matrix, model), rel=1e-7, abs=1e-9)

    from_items = als.step_items(matrix, model, genres, config)
    assert from_items == pytest.approx(squared_error_of(matrix, model), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("use_genres", [False, True])
def test_epoch_stats_match_full_loss(movielens, use_genres):
    seen: list[als.EpochStats] = []
    config = als.ALSConfig(factors=16, epochs=2, use_genres=use_genres)
    model = als.train(movielens.matrix, movielens.genres, config, callback=seen.append)

    loss, squared_error = loss_and_squared_error(movielens.matrix, model, movielens.genres, config)
    assert seen[-1].rmse == pytest.approx(np.sqrt(squared_error / movielens.matrix.nnz), rel=1e-7)
    if not use_genres:
        # With genres, train moves the unrated items onto the final priors after the last
        # epoch, which lowers their penalty below the loss the epoch reported.
        assert seen[-1].loss == pytest.approx(loss, rel=1e-7)
