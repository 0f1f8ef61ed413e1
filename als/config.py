"""Hyperparameters of the biased matrix factorisation with a genre prior."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ALSConfig:
    """Hyperparameters for training and fold-in, validated on construction.

    The loss is an unnormalised sum over ratings, so the penalties are of order 1 to 20: each
    one weighs against a row's rating count, not against a mean.

    The defaults are the choice of `streamrec tune` on MovieLens ml-latest-small: trained on
    the random 80% training split with 12.5% of it held out for validation, the best NDCG@10
    among settings within 0.005 of the best validation RMSE whose one-rating visitors get
    genre-coherent lists. Other data sets may need other penalties.
    """

    factors: int = 48
    """Number of latent factors K of every user, item and genre vector."""

    reg_factors: float = 1.4
    """Penalty tau on |u_m|^2 and on |v_n - g_n|^2 (the distance of an item from its genre prior)."""

    reg_bias: float = 10.0
    """Penalty gamma on the squared user and item biases."""

    reg_genre: float = 5.0
    """Penalty beta on the squared genre factors |f_k|^2."""

    reg_count_exponent: float = 0.5
    """Exponent e that scales the factor penalty of a row with n ratings to tau * max(n, 1)^e.

    0 gives every row the same penalty; 1 is the count-weighted penalty of ALS-WR, under which
    a user with one rating gets a far weaker pull towards zero than one with hundreds.
    """

    support_weight: float = 2.0
    """Weight of log(1 + rating count) of an item in its ranking score (never in a predicted rating).

    Rewards items many people rated, since a user is more likely to watch them. 0 ranks by the
    predicted rating alone.
    """

    support_half_count: float = 16.0
    """Rating count r at which a user's support weight is half of support_weight.

    A user with r ratings gets support_weight * r / (r + support_half_count) (see als.ranking).
    The support term then counts fully for users with long histories and little for a visitor
    with one or two ratings. That visitor's list follows their ratings instead of the most-rated
    films. 0 gives every user the full weight.
    """

    epochs: int = 30
    """Number of full ALS passes (users, items, genres)."""

    use_genres: bool = True
    """Pull item factors towards the genre prior. When False the prior is zero (plain biased MF)."""

    seed: int = 42
    """Seed of the random initial item factors."""

    init_scale: float = 0.1
    """Standard deviation of the initial item factors (drawn from a normal distribution)."""

    def __post_init__(self) -> None:
        # Numpy scalars are accepted and stored as Python numbers, so to_dict stays JSON-ready.
        for name, minimum in (("factors", 1), ("epochs", 1), ("seed", 0)):
            object.__setattr__(self, name, _require_int(name, getattr(self, name), minimum=minimum))
        for name in ("reg_factors", "reg_bias", "reg_genre", "init_scale"):
            object.__setattr__(self, name, _require_positive(name, getattr(self, name)))
        object.__setattr__(self, "support_weight", _require_non_negative("support_weight", self.support_weight))
        object.__setattr__(
            self, "support_half_count", _require_non_negative("support_half_count", self.support_half_count)
        )
        object.__setattr__(
            self, "reg_count_exponent", _require_non_negative("reg_count_exponent", self.reg_count_exponent)
        )
        if not isinstance(self.use_genres, bool):
            raise ValueError(f"use_genres: must be a bool, got {self.use_genres!r}")

    def to_dict(self) -> dict:
        """Return the fields as a plain dict (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_stored(cls, values: dict) -> ALSConfig:
        """Build the config a stored model (a snapshot's hyperparameters) was trained with.

        A field missing from `values` because it was added after the model was stored takes
        the value that reproduces the older model (see FIELDS_ADDED_LATER), not today's default.
        """
        return cls(**{**FIELDS_ADDED_LATER, **values})


# Fields added after snapshots were first published, with the value that matches how an older
# snapshot was trained and ranked: no count scaling of the penalty, no support term, and the same
# support weight for every user.
FIELDS_ADDED_LATER = {"reg_count_exponent": 0.0, "support_weight": 0.0, "support_half_count": 0.0}


def _require_int(name: str, value: object, *, minimum: int) -> int:
    # bool is a subclass of int, but True as a factor count is a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return int(value)


def _require_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be > 0 and finite, got {value}")
    return float(value)


def _require_non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be >= 0 and finite, got {value}")
    return float(value)
