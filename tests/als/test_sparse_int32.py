"""Index arrays are kept as int32 in the rating matrix without wrapping large values into range."""

import numpy as np
import pytest

import als
from als.sparse import check_index_array


def test_large_index_rejected_before_int32_conversion():
    with pytest.raises(ValueError, match=r"^user_idx: must be in \[0, 3\), got 4294967296$"):
        als.build_rating_matrix(np.array([2**32]), np.array([0]), np.array([1.0]), 3, 2)


def test_int32_request_returns_int32():
    assert check_index_array("item_idx", np.array([0, 2], np.int64), 3, np.int32).dtype == np.int32


def test_matrix_columns_are_int32():
    matrix = als.build_rating_matrix(np.array([1, 0]), np.array([0, 1]), np.array([4.0, 3.0]), 2, 2)
    assert matrix.user_items.dtype == np.int32
    assert matrix.item_users.dtype == np.int32
    np.testing.assert_array_equal(matrix.item_users, [1, 0])
