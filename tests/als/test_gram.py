"""accumulate_gram's register-blocked float32 sums against a float64 numpy Gram matrix."""

import numpy as np
import pytest

from als.kernels import (
    accumulate_gram,
    pad_factors,
    tile_row_width,
    tile_width,
)


def gram_sums(K, columns, ratings, factors, bias, global_mean):
    """Return the Gram matrix of the extended rows (w, 1, y), (K + 2, K + 2), from accumulate_gram."""
    padded = pad_factors(factors, bias)
    Q = tile_row_width(K)
    # NaN scratch shows any entry that accumulate_gram reads before setting.
    G = np.full((Q, Q), np.nan, np.float32)
    T = np.full((tile_width(Q), Q), np.nan, np.float32)
    sum_y2 = accumulate_gram(0, columns.shape[0], columns, ratings, padded, global_mean, K, G, T)

    result = np.tril(G[: K + 2, : K + 2]).astype(np.float64)
    result += np.tril(result, -1).T
    result[K + 1, K + 1] = sum_y2
    return result


# K + 2 takes every remainder modulo the four rows of a block, and K + 1 lands on and off a
# multiple of eight lanes.
@pytest.mark.parametrize("K", [1, 7, 8, 31, 32, 33, 62, 63, 64, 65, 128])
# 70 to 72 entries straddle the 71-entry tile of K=64, and 200 or more span several tiles at any K.
@pytest.mark.parametrize("length", [0, 1, 5, 70, 71, 72, 200, 1000])
def test_gram_matches_numpy(K, length):
    rng = np.random.default_rng(1000 * K + length)
    n_columns = 1500
    factors = rng.normal(0, 0.5, (n_columns, K)).astype(np.float32)
    bias = rng.normal(0, 0.2, n_columns).astype(np.float32)
    columns = rng.choice(n_columns, length, replace=False).astype(np.int32)
    ratings = (rng.integers(1, 11, length) / 2).astype(np.float32)

    result = gram_sums(K, columns, ratings, factors, bias, 3.5)

    y = ratings.astype(np.float64) - 3.5 - bias[columns]
    t = np.hstack([factors[columns].astype(np.float64), np.ones((length, 1)), y[:, None]])
    expected = t.T @ t
    # float32 sums over `length` terms of size about 1 lose about length * 6e-8 relative.
    atol = 1e-5 * max(length, 1)
    np.testing.assert_allclose(result[: K + 1, : K + 1], expected[: K + 1, : K + 1], rtol=1e-5, atol=atol)
    np.testing.assert_allclose(result[: K + 1, K + 1], expected[: K + 1, K + 1], rtol=1e-5, atol=atol)
    assert result[K + 1, K + 1] == pytest.approx(expected[K + 1, K + 1], rel=1e-6, abs=1e-6)

