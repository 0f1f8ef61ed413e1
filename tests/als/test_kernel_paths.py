"""Both row solvers (float32 tiles and float64 sums) match a numpy solve of the normal equations."""

import numpy as np
import pytest

import als
from als.kernels import TINY_PENALTY, solve_rows
from als.steps import row_chunks


def reference(matrix, V, b, user, K, tau, gamma, global_mean):
    span = slice(matrix.user_indptr[user], matrix.user_indptr[user + 1])
    columns = matrix.user_items[span]
    W = np.hstack([V[columns].astype(np.float64), np.ones((columns.shape[0], 1))])
    y = matrix.user_ratings[span] - global_mean - b[columns]
    A = W.T @ W + np.diag([tau] * K + [gamma])
    return np.linalg.solve(A, W.T @ y)


@pytest.mark.parametrize(
    "K, ratings_per_user",
    [(7, 30), (8, 4), (15, 40), (32, 12), (32, 150), (64, 40), (64, 300), (128, 200)],
)
@pytest.mark.parametrize("tau", [0.7, TINY_PENALTY / 10])
def test_row_solvers_match_numpy(K, ratings_per_user, tau):
    rng = np.random.default_rng(K + ratings_per_user)
    n_users, n_items = 30, 400
    users = np.repeat(np.arange(n_users), ratings_per_user)
    items = np.concatenate([rng.choice(n_items, ratings_per_user, replace=False) for _ in range(n_users)])
    matrix = als.build_rating_matrix(users, items, rng.integers(1, 11, users.shape[0]) / 2, n_users, n_items)
    V = rng.normal(0, 0.3, (n_items, K)).astype(np.float32)
    b = rng.normal(0, 0.2, n_items).astype(np.float32)
    factors = np.zeros((n_users, K), np.float32)
    biases = np.zeros(n_users, np.float32)

    failed, _ = solve_rows(
        matrix.user_indptr, matrix.user_items, matrix.user_ratings, V, b, 3.5, np.zeros((0, K)),
        1.3, tau, 0.0, row_chunks(matrix.user_indptr, K), factors, biases,
    )

    assert np.all(failed == -1)
    for user in range(n_users):
        expected = reference(matrix, V, b, user, K, tau, 1.3, 3.5)
        # A tiny penalty leaves short rows ill-conditioned, so only the fit to the data is stable.
        atol = 1e-5 if tau >= TINY_PENALTY or ratings_per_user > K + 1 else 1e-2
        np.testing.assert_allclose(factors[user], expected[:K], atol=atol)
        assert biases[user] == pytest.approx(expected[K], abs=atol)
