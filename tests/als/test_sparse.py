import numpy as np
import pytest

import als


def dense_from_csr(indptr, columns, values, shape):
    dense = np.full(shape, np.nan)
    for row in range(shape[0]):
        for p in range(indptr[row], indptr[row + 1]):
            dense[row, columns[p]] = values[p]
    return dense


def test_rating_matrix_layouts_agree_with_input():
    rng = np.random.default_rng(3)
    mask = rng.random((30, 20)) < 0.3
    users, items = np.nonzero(mask)
    order = rng.permutation(users.size)
    users, items = users[order], items[order]
    ratings = rng.integers(1, 11, size=users.size) / 2.0

    matrix = als.build_rating_matrix(users, items, ratings, 30, 20)

    expected = np.full((30, 20), np.nan)
    expected[users, items] = ratings
    by_user = dense_from_csr(matrix.user_indptr, matrix.user_items, matrix.user_ratings, (30, 20))
    by_item = dense_from_csr(matrix.item_indptr, matrix.item_users, matrix.item_ratings, (20, 30))
    np.testing.assert_array_equal(by_user, expected)
    np.testing.assert_array_equal(by_item, expected.T)
    assert matrix.nnz == users.size


def test_rating_matrix_rows_sorted_and_typed():
    users = np.array([2, 0, 2, 0, 1])
    items = np.array([3, 1, 0, 2, 1])
    matrix = als.build_rating_matrix(users, items, np.arange(5.0), 4, 5)

    assert matrix.user_indptr.tolist() == [0, 2, 3, 5, 5]
    assert matrix.user_items.tolist() == [1, 2, 1, 0, 3]
    assert matrix.user_ratings.tolist() == [1.0, 3.0, 4.0, 2.0, 0.0]
    assert matrix.item_indptr.tolist() == [0, 1, 3, 4, 5, 5]
    assert matrix.item_users.tolist() == [2, 0, 1, 0, 2]
    assert matrix.user_indptr.dtype == np.int64
    assert matrix.user_items.dtype == np.int32
    assert matrix.user_ratings.dtype == np.float32
    assert matrix.item_users.dtype == np.int32


def test_rating_matrix_rejects_duplicate_pair():
    with pytest.raises(ValueError, match=r"pair \(1, 2\) occurs more than once"):
        als.build_rating_matrix([0, 1, 1], [2, 2, 2], [3.0, 4.0, 5.0], 2, 3)


@pytest.mark.parametrize(
    ("users", "items", "ratings", "message"),
    [
        ([0, 5], [0, 1], [1.0, 2.0], r"user_idx: must be in \[0, 3\), got 5"),
        ([0, -1], [0, 1], [1.0, 2.0], r"user_idx: must be in \[0, 3\), got -1"),
        ([0, 1], [0, 4], [1.0, 2.0], r"item_idx: must be in \[0, 4\), got 4"),
        ([0, 1], [0, 1], [1.0, np.nan], r"rating: must be finite, got nan at position 1"),
        ([0, 1], [0, 1], [1.0], r"must have equal lengths, got 2, 2, 1"),
        ([0.5, 1], [0, 1], [1.0, 2.0], r"user_idx: must hold integers"),
    ],
)
def test_rating_matrix_rejects_bad_input(users, items, ratings, message):
    with pytest.raises(ValueError, match=message):
        als.build_rating_matrix(np.array(users), np.array(items), np.array(ratings), 3, 4)


def test_rating_matrix_empty():
    matrix = als.build_rating_matrix(np.zeros(0, int), np.zeros(0, int), np.zeros(0), 2, 3)
    assert matrix.nnz == 0
    assert matrix.user_indptr.tolist() == [0, 0, 0]
    assert matrix.item_indptr.tolist() == [0, 0, 0, 0]
