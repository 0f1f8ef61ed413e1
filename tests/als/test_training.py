import logging
import sys
from pathlib import Path

import numpy as np
import pytest

import als
from tests.als.conftest import load_movielens, random_problem

training_module = sys.modules["als.training"]

DATA = Path(__file__).resolve().parents[2] / "data"


def test_train_reports_every_epoch(caplog):
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3, epochs=4)
    seen = []
    with caplog.at_level(logging.INFO, logger="als.training"):
        als.train(matrix, genres, config, callback=seen.append)

    assert [stats.epoch for stats in seen] == [1, 2, 3, 4]
    assert all(later.loss <= earlier.loss * (1 + 1e-6) for earlier, later in zip(seen, seen[1:]))
    assert all(stats.rmse > 0 and stats.seconds >= 0 for stats in seen)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 4
    assert messages[0].startswith("epoch finished epoch=1 loss=")
    assert " rmse=" in messages[0]
    assert " seconds=" in messages[0]


def test_train_is_deterministic_for_a_seed():
    matrix, genres = random_problem(2)
    config = als.ALSConfig(factors=3, epochs=3, seed=9)
    first = als.train(matrix, genres, config)
    second = als.train(matrix, genres, config)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)
    np.testing.assert_array_equal(first.user_bias, second.user_bias)


def test_train_output_arrays():
    matrix, genres = random_problem(3)
    config = als.ALSConfig(factors=4, epochs=2)
    model = als.train(matrix, genres, config)
    assert model.global_mean == pytest.approx(float(matrix.user_ratings.astype(np.float64).mean()))
    for name, shape in [
        ("user_factors", (matrix.n_users, 4)),
        ("user_bias", (matrix.n_users,)),
        ("item_factors", (matrix.n_items, 4)),
        ("item_bias", (matrix.n_items,)),
        ("genre_factors", (genres.n_genres, 4)),
    ]:
        array = getattr(model, name)
        assert array.shape == shape, name
        assert array.dtype == np.float32, name
        assert array.flags.c_contiguous, name


def test_train_leaves_unrated_items_on_their_prior():
    matrix, genres = random_problem(1)
    config = als.ALSConfig(factors=3, epochs=3)
    model = als.train(matrix, genres, config)
    unrated = matrix.n_items - 1
    assert matrix.item_counts()[unrated] == 0
    assert model.item_bias[unrated] == 0.0
    prior = als.item_prior(model.genre_factors, genres)[unrated]
    assert np.abs(prior).max() > 0
    np.testing.assert_array_equal(model.item_factors[unrated], prior)


def test_train_uses_given_global_mean():
    matrix, genres = random_problem(1)
    model = als.train(matrix, genres, als.ALSConfig(factors=2, epochs=1), global_mean=2.0)
    assert model.global_mean == 2.0


def test_train_without_genres_keeps_genre_factors_zero():
    matrix, genres = random_problem(1)
    model = als.train(matrix, genres, als.ALSConfig(factors=2, epochs=3, use_genres=False))
    assert np.all(model.genre_factors == 0.0)
    assert np.all(model.item_factors[matrix.n_items - 1] == 0.0)


def test_tiny_regularisation_stays_finite():
    matrix = als.build_rating_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([5.0, 1.0, 3.5]), 3, 2)
    genres = als.build_item_genres(np.array([0, 1, 1]), np.array([0, 0, 1]), 2, 2)
    config = als.ALSConfig(factors=6, reg_factors=1e-9, reg_bias=1e-9, reg_genre=1e-9, epochs=20)

    model = als.train(matrix, genres, config)

    for name in ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"):
        assert np.isfinite(getattr(model, name)).all(), name
    assert np.isfinite(als.predict(model, np.array([0, 1, 2]), np.array([1, 0, 1]))).all()
    # With almost no penalty the three ratings are fitted almost exactly.
    fitted = als.predict(model, np.array([0, 0, 1]), np.array([0, 1, 1]))
    np.testing.assert_allclose(fitted, [5.0, 1.0, 3.5], atol=1e-3)


def test_train_raises_when_an_epoch_goes_non_finite(monkeypatch):
    def poisoned_step_genres(model, genres, config, item_counts=None):
        model.genre_factors[1, 0] = np.inf

    monkeypatch.setattr(training_module, "step_genres", poisoned_step_genres)
    matrix, genres = random_problem(0)
    with pytest.raises(als.NonFiniteError, match="genre_factors: row 1 is not finite after epoch 1"):
        als.train(matrix, genres, als.ALSConfig(factors=3, epochs=3))


def test_train_rejects_mismatched_genres_and_empty_matrix():
    matrix, _ = random_problem(0)
    with pytest.raises(ValueError, match="genres: must cover 9 items, got 4"):
        als.train(matrix, als.empty_item_genres(4), als.ALSConfig(factors=2))
    empty = als.build_rating_matrix(np.zeros(0, int), np.zeros(0, int), np.zeros(0), 2, 2)
    with pytest.raises(ValueError, match="global_mean must be given"):
        als.train(empty, als.empty_item_genres(2), als.ALSConfig(factors=2))


@pytest.mark.slow
def test_default_config_rmse_on_random_split():
    train_data = load_movielens(
        DATA / "splits" / "ml-latest-small.random80.train.csv", DATA / "ml-latest-small" / "movies.csv"
    )
    model = als.train(train_data.matrix, train_data.genres, als.ALSConfig())

    test_users, test_movies, test_ratings = np.loadtxt(
        DATA / "splits" / "ml-latest-small.random80.test.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2)
    ).T
    users = np.array([train_data.user_index.get(int(u), als.UNKNOWN) for u in test_users])
    items = np.array([train_data.item_index.get(int(m), als.UNKNOWN) for m in test_movies])
    predictions = np.clip(als.predict(model, users, items), 0.5, 5.0)

    assert als.rmse(predictions, test_ratings) <= 0.870
