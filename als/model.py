"""The trained model's arrays and their starting values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from als.config import ALSConfig
from als.genres import ItemGenres
from als.sparse import RatingMatrix


@dataclass
class ALSModel:
    """Parameters of r_hat = global_mean + b_m + c_n + u_m . v_n, float32 and C-contiguous."""

    global_mean: float
    user_factors: np.ndarray  # (n_users, K)
    user_bias: np.ndarray  # (n_users,)
    item_factors: np.ndarray  # (n_items, K)
    item_bias: np.ndarray  # (n_items,)
    genre_factors: np.ndarray  # (n_genres, K)

    @property
    def factors(self) -> int:
        """Number of latent factors K."""
        return int(self.item_factors.shape[1])

    @property
    def n_users(self) -> int:
        """Number of user rows."""
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        """Number of item rows."""
        return int(self.item_factors.shape[0])

    def copy(self) -> ALSModel:
        """Return a deep copy (the in-place steps do not touch it)."""
        return ALSModel(
            global_mean=self.global_mean,
            user_factors=self.user_factors.copy(),
            user_bias=self.user_bias.copy(),
            item_factors=self.item_factors.copy(),
            item_bias=self.item_bias.copy(),
            genre_factors=self.genre_factors.copy(),
        )


def init_model(
    matrix: RatingMatrix, genres: ItemGenres, config: ALSConfig, global_mean: float
) -> ALSModel:
    """Return the starting point of training.

    Item factors are drawn from N(0, init_scale^2) with the config's seed, because all-zero
    item factors would keep every user's factors at zero. Biases, user factors and genre
    factors start at zero, because the first user step replaces the user arrays anyway.
    """
    K = config.factors
    rng = np.random.default_rng(config.seed)
    item_factors = rng.normal(0.0, config.init_scale, size=(matrix.n_items, K))
    return ALSModel(
        global_mean=float(global_mean),
        user_factors=np.zeros((matrix.n_users, K), np.float32),
        user_bias=np.zeros(matrix.n_users, np.float32),
        item_factors=np.ascontiguousarray(item_factors, dtype=np.float32),
        item_bias=np.zeros(matrix.n_items, np.float32),
        genre_factors=np.zeros((genres.n_genres, K), np.float32),
    )
