"""The three exact block updates of ALS (users, items, genres) and the loss they minimise.

The loss is

    L = 1/2 sum_(m,n) (r_mn - mu - b_m - c_n - u_m . v_n)^2
        + tau/2 sum_m rho_m |u_m|^2 + tau/2 sum_n rho_n |v_n - g_n|^2
        + gamma/2 (sum_m b_m^2 + sum_n c_n^2) + beta/2 sum_k |f_k|^2

with tau = reg_factors, gamma = reg_bias, beta = reg_genre, g_n the genre prior of item n and
rho_r = max(n_r, 1)^e the count weight of a row with n_r ratings (e = reg_count_exponent; e = 0
makes every rho_r 1).
Without genres g_n = 0 and the beta term is dropped. Each step sets one block to its exact
minimiser with everything else fixed, so no step increases L (up to float32 rounding of the
stored result).
"""

from __future__ import annotations

import numba
import numpy as np

from als.config import ALSConfig
from als.errors import SolveError
from als.genres import ItemGenres, genre_weights, item_prior64, update_genre_factors
from als.kernels import pad_factors, solve_padded_rows, squared_error_sum
from als.model import ALSModel
from als.sparse import RatingMatrix

# Chunks per numba thread in a half-step: more chunks than threads lets a thread that drew
# light rows take another chunk.
CHUNKS_PER_THREAD = 8


def step_users(matrix: RatingMatrix, model: ALSModel, config: ALSConfig) -> float:
    """Set every user's bias and factors to their exact minimiser, items fixed (in place).

    Returns the sum of squared training errors of the updated model. Raises SolveError naming
    the first user whose solve failed.
    """
    check_model(matrix, model, config)
    return solve_side(
        "user_idx",
        matrix.user_indptr,
        matrix.user_items,
        matrix.user_ratings,
        model.item_factors,
        model.item_bias,
        model.global_mean,
        no_prior(model.factors),
        config,
        model.user_factors,
        model.user_bias,
    )


def step_items(
    matrix: RatingMatrix, model: ALSModel, genres: ItemGenres, config: ALSConfig
) -> float:
    """Set every item's bias and factors to their exact minimiser, users and genres fixed.

    An item's factors are pulled towards its genre prior when config.use_genres is set, and an
    unrated item lands exactly on its prior with bias 0. Returns the sum of squared training
    errors of the updated model. Raises SolveError naming the first item whose solve failed.
    """
    check_model(matrix, model, config)
    check_genres(matrix, model, genres)
    prior = item_prior64(model.genre_factors, genres) if config.use_genres else no_prior(model.factors)
    return solve_side(
        "item_idx",
        matrix.item_indptr,
        matrix.item_users,
        matrix.item_ratings,
        model.user_factors,
        model.user_bias,
        model.global_mean,
        prior,
        config,
        model.item_factors,
        model.item_bias,
    )


def step_genres(
    model: ALSModel, genres: ItemGenres, config: ALSConfig, item_counts: np.ndarray | None = None
) -> None:
    """Set each genre's factors in turn to their exact minimiser, items fixed (in place).

    item_counts (ratings per item) sets the count weights of the items' prior penalties; it may
    be None only when config.reg_count_exponent is 0. Does nothing when config.use_genres is
    off, since the genres then do not enter the loss.
    """
    if not config.use_genres or genres.n_genres == 0:
        return
    if genres.n_items != model.n_items:
        raise ValueError(f"genres: must cover {model.n_items} items, got {genres.n_items}")
    if item_counts is None:
        if config.reg_count_exponent != 0.0:
            raise ValueError("item_counts: required when reg_count_exponent is not 0")
        item_counts = np.ones(model.n_items, np.float64)
    genre_indptr, genre_items = genres.by_genre()
    update_genre_factors(
        model.item_factors,
        genres.indptr,
        genres.indices,
        genre_indptr,
        genre_items,
        genre_weights(genres),
        count_weights(item_counts, config),
        config.reg_genre / config.reg_factors,
        model.genre_factors,
    )


def compute_loss(
    matrix: RatingMatrix, model: ALSModel, genres: ItemGenres, config: ALSConfig
) -> float:
    """Return the full loss L including every penalty term, accumulated in float64."""
    loss, _ = loss_and_squared_error(matrix, model, genres, config)
    return loss


def loss_and_squared_error(
    matrix: RatingMatrix, model: ALSModel, genres: ItemGenres, config: ALSConfig
) -> tuple[float, float]:
    """Return (L, sum of squared training errors). The second gives the training RMSE."""
    check_model(matrix, model, config)
    check_genres(matrix, model, genres)
    squared_error = float(
        squared_error_sum(
            matrix.user_indptr,
            matrix.user_items,
            matrix.user_ratings,
            model.user_factors,
            model.user_bias,
            model.item_factors,
            model.item_bias,
            model.global_mean,
        )
    )
    return loss_from_squared_error(matrix, model, genres, config, squared_error), squared_error


def loss_from_squared_error(
    matrix: RatingMatrix, model: ALSModel, genres: ItemGenres, config: ALSConfig,
    squared_error: float,
) -> float:
    """Return L given its data term, the sum of squared training errors, by adding the penalties."""
    tau = config.reg_factors
    item_factors = model.item_factors.astype(np.float64)
    if config.use_genres:
        item_factors -= item_prior64(model.genre_factors, genres)
    user_weights = count_weights(np.diff(matrix.user_indptr), config)
    item_weights = count_weights(np.diff(matrix.item_indptr), config)
    loss = 0.5 * squared_error
    loss += 0.5 * tau * _weighted_sum_of_squares(model.user_factors, user_weights)
    loss += 0.5 * tau * _weighted_sum_of_squares(item_factors, item_weights)
    loss += 0.5 * config.reg_bias * (_sum_of_squares(model.user_bias) + _sum_of_squares(model.item_bias))
    if config.use_genres:
        loss += 0.5 * config.reg_genre * _sum_of_squares(model.genre_factors)
    return loss


def solve_side(
    row_name: str,
    indptr: np.ndarray,
    columns: np.ndarray,
    ratings: np.ndarray,
    other_factors: np.ndarray,
    other_bias: np.ndarray,
    global_mean: float,
    prior: np.ndarray,
    config: ALSConfig,
    out_factors: np.ndarray,
    out_bias: np.ndarray,
    padded: np.ndarray | None = None,
) -> float:
    """Solve every row of one CSR side in parallel, or raise SolveError naming the first failed row.

    Returns the rows' sum of squared errors sum (rating - global_mean - other_bias - out_bias
    - out_factors . other_factors)^2 after the solve, from the sums the solves already built.
    `padded` is pad_factors(other_factors, other_bias) when the caller keeps it, else it is built here.
    """
    failed, squared_errors = solve_padded_rows(
        indptr,
        columns,
        ratings,
        other_factors,
        pad_factors(other_factors, other_bias) if padded is None else padded,
        other_bias,
        float(global_mean),
        prior,
        config.reg_bias,
        config.reg_factors,
        config.reg_count_exponent,
        row_chunks(indptr, other_factors.shape[1]),
        out_factors,
        out_bias,
    )
    failed_rows = failed[failed >= 0]
    if failed_rows.size:
        row = int(failed_rows.min())
        raise SolveError(
            f"{row_name} {row}: Cholesky solve for bias and factors failed, so the ratings "
            f"or the fixed side's factors and biases are probably not finite"
        )
    return float(squared_errors.sum())


def row_chunks(indptr: np.ndarray, factors: int) -> np.ndarray:
    """Return int64 row boundaries that split the rows into chunks of similar cost.

    A rating costs about K^2/2 operations and a row's solve about K^3/6, so a row is counted as
    its rating count plus K/3.
    """
    n_rows = indptr.shape[0] - 1
    if n_rows == 0:
        return np.zeros(1, np.int64)
    n_chunks = min(n_rows, CHUNKS_PER_THREAD * numba.get_num_threads())
    cumulative_cost = indptr + np.arange(n_rows + 1) * (factors / 3.0 + 1.0)
    targets = cumulative_cost[-1] * np.arange(1, n_chunks) / n_chunks
    cuts = np.searchsorted(cumulative_cost, targets)
    return np.unique(np.concatenate(([0], cuts, [n_rows]))).astype(np.int64)


def count_weights(counts: np.ndarray, config: ALSConfig) -> np.ndarray:
    """Return rho_r = max(n_r, 1)^e as float64 for rating counts n_r (all 1 when e is 0).

    This is the factor of tau in each row's factor penalty, the same one the row solver uses.
    """
    counts = np.asarray(counts, np.float64)
    if config.reg_count_exponent == 0.0:
        return np.ones(counts.shape[0], np.float64)
    return np.maximum(counts, 1.0) ** config.reg_count_exponent


def no_prior(factors: int) -> np.ndarray:
    """Return an empty (0, K) prior, which the row solver reads as a zero prior."""
    return np.zeros((0, factors), np.float64)


def check_model(matrix: RatingMatrix, model: ALSModel, config: ALSConfig) -> None:
    """Raise ValueError unless the model's shapes and dtypes fit the matrix and the config."""
    K = config.factors
    expected = {
        "user_factors": (matrix.n_users, K),
        "user_bias": (matrix.n_users,),
        "item_factors": (matrix.n_items, K),
        "item_bias": (matrix.n_items,),
    }
    for name, shape in expected.items():
        array = getattr(model, name)
        if array.shape != shape:
            raise ValueError(f"{name}: must have shape {shape}, got {array.shape}")
        check_float32_array(name, array)
    if model.genre_factors.ndim != 2 or model.genre_factors.shape[1] != K:
        raise ValueError(f"genre_factors: must have shape (n_genres, {K}), got {model.genre_factors.shape}")
    check_float32_array("genre_factors", model.genre_factors)


def check_genres(matrix: RatingMatrix, model: ALSModel, genres: ItemGenres) -> None:
    """Raise ValueError unless the genres cover the matrix's items and match the genre factors."""
    if genres.n_items != matrix.n_items:
        raise ValueError(f"genres: must cover {matrix.n_items} items, got {genres.n_items}")
    if model.genre_factors.shape[0] != genres.n_genres:
        raise ValueError(
            f"genre_factors: must have {genres.n_genres} rows, got {model.genre_factors.shape[0]}"
        )


def check_float32_array(name: str, array: np.ndarray) -> None:
    """Raise ValueError unless array is float32 and C-contiguous, as the kernels write in place."""
    if array.dtype != np.float32 or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(
            f"{name}: must be a writeable C-contiguous float32 array, got dtype {array.dtype}"
        )


def _weighted_sum_of_squares(array: np.ndarray, weights: np.ndarray) -> float:
    """Return sum_r weights_r |array_r|^2 over the rows of a 2-D array."""
    rows = array.astype(np.float64).reshape(array.shape[0], -1)
    return float(weights @ np.einsum("ij,ij->i", rows, rows))


def _sum_of_squares(array: np.ndarray) -> float:
    flat = array.astype(np.float64).ravel()
    return float(flat @ flat)
