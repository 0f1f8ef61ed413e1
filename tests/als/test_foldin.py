import numpy as np
import pytest

import als
from tests.als.conftest import random_problem


@pytest.fixture(scope="module")
def trained(movielens):
    config = als.ALSConfig(factors=10, reg_factors=10.0, reg_bias=3.0, reg_genre=5.0, epochs=3)
    model = als.train(movielens.matrix, movielens.genres, config)
    return movielens.matrix, model, config


def test_foldin_matches_user_half_step(trained):
    matrix, model, config = trained
    stepped = model.copy()
    als.step_users(matrix, stepped, config)

    for user in [0, 1, 413, matrix.n_users - 1]:
        span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
        bias, factors = als.fold_in(matrix.user_items[span], matrix.user_ratings[span], model, config)
        assert factors.dtype == np.float32
        assert factors.shape == (config.factors,)
        assert bias == pytest.approx(float(stepped.user_bias[user]), abs=1e-5)
        np.testing.assert_allclose(factors, stepped.user_factors[user], atol=1e-5)


def test_foldin_many_matches_user_half_step(trained):
    matrix, model, config = trained
    stepped = model.copy()
    als.step_users(matrix, stepped, config)

    users = np.array([5, 2, 77])
    indptr = np.zeros(len(users) + 1, np.int64)
    items, ratings = [], []
    for position, user in enumerate(users):
        span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
        items.append(matrix.user_items[span])
        ratings.append(matrix.user_ratings[span])
        indptr[position + 1] = indptr[position] + len(items[-1])

    biases, factors = als.fold_in_many(indptr, np.concatenate(items), np.concatenate(ratings), model, config)

    np.testing.assert_allclose(biases, stepped.user_bias[users], atol=1e-5)
    np.testing.assert_allclose(factors, stepped.user_factors[users], atol=1e-5)


def test_foldin_order_of_ratings_does_not_matter(trained):
    matrix, model, config = trained
    span = slice(matrix.user_indptr[3], matrix.user_indptr[4])
    items, ratings = matrix.user_items[span], matrix.user_ratings[span]
    reverse = np.arange(len(items))[::-1]
    bias, factors = als.fold_in(items, ratings, model, config)
    bias_reversed, factors_reversed = als.fold_in(items[reverse], ratings[reverse], model, config)
    assert bias_reversed == pytest.approx(bias, abs=1e-5)
    np.testing.assert_allclose(factors_reversed, factors, atol=1e-5)


def test_foldin_without_ratings_is_zero():
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3, epochs=2)
    model = als.train(matrix, genres, config)
    bias, factors = als.fold_in(np.zeros(0, np.int32), np.zeros(0, np.float32), model, config)
    assert bias == 0.0
    assert np.all(factors == 0.0)


def test_foldin_works_on_read_only_model():
    matrix, genres = random_problem(1)
    config = als.ALSConfig(factors=3, epochs=2)
    model = als.train(matrix, genres, config)
    expected = als.fold_in(np.array([0, 2]), np.array([4.0, 2.5]), model, config)
    for array in (model.item_factors, model.item_bias):
        array.flags.writeable = False
    bias, factors = als.fold_in(np.array([0, 2]), np.array([4.0, 2.5]), model, config)
    assert bias == expected[0]
    np.testing.assert_array_equal(factors, expected[1])


def test_foldin_follows_changed_item_factors():
    matrix, genres = random_problem(2)
    config = als.ALSConfig(factors=3, epochs=2)
    model = als.train(matrix, genres, config)
    items, ratings = np.array([0, 2, 5]), np.array([4.0, 2.5, 1.0])
    first = als.fold_in(items, ratings, model, config)

    # A writable table changed in place, as training does, is padded again.
    model.item_factors *= 2.0
    doubled = als.fold_in(items, ratings, model, config)
    assert not np.allclose(doubled[1], first[1])

    # A read-only table is padded once and kept, and a new read-only table replaces it.
    frozen = model.item_factors.copy()
    frozen.flags.writeable = False
    model.item_factors = frozen
    np.testing.assert_array_equal(als.fold_in(items, ratings, model, config)[1], doubled[1])
    restored = (frozen / 2.0).astype(np.float32)
    restored.flags.writeable = False
    model.item_factors = restored
    np.testing.assert_allclose(als.fold_in(items, ratings, model, config)[1], first[1], rtol=1e-5, atol=1e-6)

    # Each padded row carries its item's bias, so a new read-only bias table is padded again.
    shifted = (model.item_bias + 1.0).astype(np.float32)
    model.item_bias = shifted
    expected = als.fold_in(items, ratings, model, config)
    for bias in (model.item_bias, model.item_bias.copy()):
        bias.flags.writeable = False
        model.item_bias = bias
        bias_result, factors = als.fold_in(items, ratings, model, config)
        assert bias_result == expected[0]
        np.testing.assert_array_equal(factors, expected[1])
    assert expected[0] != pytest.approx(first[0], abs=0.1)


@pytest.mark.parametrize(
    ("items", "ratings", "message"),
    [
        ([0, 9], [4.0, 3.0], r"item_idx: must be in \[0, 9\), got 9"),
        ([-1], [4.0], r"item_idx: must be in \[0, 9\), got -1"),
        ([0, 1], [4.0], r"ratings: must be 1-D with the length of item_idx \(2\)"),
        ([0, 1], [4.0, np.inf], r"ratings: must be finite, got inf at position 1"),
    ],
)
def test_foldin_rejects_bad_input(items, ratings, message):
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3, epochs=1)
    model = als.train(matrix, genres, config)
    with pytest.raises(ValueError, match=message):
        als.fold_in(np.array(items), np.array(ratings), model, config)


def test_foldin_many_rejects_bad_indptr():
    matrix, genres = random_problem(0)
    config = als.ALSConfig(factors=3, epochs=1)
    model = als.train(matrix, genres, config)
    with pytest.raises(ValueError, match="indptr: must be non-decreasing, got 2 then 1"):
        als.fold_in_many(np.array([0, 2, 1, 3]), np.array([0, 1, 2]), np.ones(3), model, config)
    with pytest.raises(ValueError, match="indptr: last entry must equal len"):
        als.fold_in_many(np.array([0, 2]), np.array([0, 1, 2]), np.ones(3), model, config)
    with pytest.raises(ValueError, match="factors: config has 4 but the model has 3"):
        als.fold_in_many(np.array([0, 1]), np.array([0]), np.ones(1), model, als.ALSConfig(factors=4))


def test_foldin_works_on_memory_mapped_model(tmp_path):
    matrix, genres = random_problem(1)
    config = als.ALSConfig(factors=3, epochs=2)
    model = als.train(matrix, genres, config)
    expected = als.fold_in(np.array([0, 2]), np.array([4.0, 2.5]), model, config)
    for name in ("item_factors", "item_bias"):
        np.save(tmp_path / f"{name}.npy", getattr(model, name))
        setattr(model, name, np.load(tmp_path / f"{name}.npy", mmap_mode="r"))

    bias, factors = als.fold_in(np.array([0, 2]), np.array([4.0, 2.5]), model, config)

    assert isinstance(model.item_factors, np.memmap)
    assert bias == expected[0]
    np.testing.assert_array_equal(factors, expected[1])


def test_foldin_follows_read_only_view_of_changed_table():
    # A read-only view does not make the memory immutable: the writable array it views can
    # still change, and fold-in must not keep using the table padded before the change.
    matrix, genres = random_problem(3)
    config = als.ALSConfig(factors=3, epochs=2)
    model = als.train(matrix, genres, config)
    items, ratings = np.array([0, 2, 5]), np.array([4.0, 2.5, 1.0])
    factors, bias = model.item_factors, model.item_bias
    factors_view, bias_view = factors.view(), bias.view()
    factors_view.flags.writeable = False
    bias_view.flags.writeable = False
    model.item_factors, model.item_bias = factors_view, bias_view
    before = als.fold_in(items, ratings, model, config)

    factors *= 2.0
    bias += 1.0
    after = als.fold_in(items, ratings, model, config)
    fresh = model.copy()
    expected = als.fold_in(items, ratings, fresh, config)
    assert after[0] == pytest.approx(expected[0], abs=1e-6)
    np.testing.assert_allclose(after[1], expected[1], rtol=1e-5, atol=1e-6)
    assert after[0] != pytest.approx(before[0], abs=0.1)
