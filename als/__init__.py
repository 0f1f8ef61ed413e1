"""Biased matrix factorisation with a genre prior, trained by alternating least squares.

Pure maths on numpy arrays, with numba kernels: no I/O and no imports from the rest of
streamrec.
"""

from als.config import ALSConfig
from als.errors import NonFiniteError, SolveError
from als.foldin import fold_in, fold_in_many
from als.genres import ItemGenres, build_item_genres, empty_item_genres, item_prior
from als.metrics import mae, model_rmse, ndcg_at_k, recall_at_k, rmse
from als.model import ALSModel, init_model
from als.ranking import (
    UNKNOWN,
    item_support,
    predict,
    ranking_scores,
    ranking_table,
    ranking_user_rows,
    support_weights,
    top_n,
)
from als.sparse import RatingMatrix, build_rating_matrix
from als.steps import compute_loss, step_genres, step_items, step_users
from als.training import EpochStats, train

__all__ = [
    "ALSConfig",
    "ALSModel",
    "EpochStats",
    "ItemGenres",
    "NonFiniteError",
    "RatingMatrix",
    "SolveError",
    "UNKNOWN",
    "build_item_genres",
    "build_rating_matrix",
    "compute_loss",
    "empty_item_genres",
    "fold_in",
    "fold_in_many",
    "init_model",
    "item_support",
    "item_prior",
    "mae",
    "model_rmse",
    "ndcg_at_k",
    "predict",
    "ranking_scores",
    "ranking_table",
    "ranking_user_rows",
    "recall_at_k",
    "rmse",
    "step_genres",
    "step_items",
    "step_users",
    "support_weights",
    "top_n",
    "train",
]
