"""Hyperparameter search scored on a validation part carved out of the training ratings.

The test file is never read here. Each grid point trains one model on the fitting part; every
pair of support weight and support half count is then scored on the same model, since the
support term only changes the ranking. A row of the result is one (grid point, support pair).

Three numbers are measured per row on the validation part:

- rmse: rating error of the clipped predictions over every validation row;
- ndcg_at_10, recall_at_10: the top-N protocol of `streamrec evaluate`;
- visitor_genre_jaccard: for the most-rated items that have genres, a visitor who gives that
  one item the top rating is folded in; this is the mean Jaccard similarity between the genres
  of the visitor's ten recommendations and the genres of the item. A model that answers every
  one-rating visitor with the same popular films scores low.

The chosen row has the highest ndcg_at_10 among the rows whose rmse is within rmse_tolerance of
the best rmse and whose visitor_genre_jaccard is at least min_visitor_jaccard.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

import als
from evaluation.protocol import top_n_metrics
from evaluation.run import (
    EvaluationData, clipped_predictions, item_rating_count, model_ranking, top_n_cases, train_on,
)
from store.ratings_data import RatingsData

log = logging.getLogger(__name__)

# Pairs (reg_count_exponent, reg_factors) searched by default. The penalty of a row with n
# ratings is reg_factors * n^exponent, so a larger exponent needs a smaller reg_factors to give
# a typical row (tens of ratings) a similar pull.
DEFAULT_PENALTIES = (
    (0.0, 6.0), (0.0, 11.0), (0.0, 20.0),
    (0.5, 0.7), (0.5, 1.4), (0.5, 2.8),
    (0.75, 0.25), (0.75, 0.5), (0.75, 1.0),
    (1.0, 0.1), (1.0, 0.2),
)
DEFAULT_GRID = {"factors": (48,), "reg_bias": (3.0, 10.0), "reg_genre": (5.0,)}
DEFAULT_SUPPORT_WEIGHTS = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.5, 3.0)
DEFAULT_SUPPORT_HALF_COUNTS = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0)

# Items a one-rating visitor is simulated for: the most-rated ones that have genres.
VISITOR_ITEMS = 20

# Lowest mean genre Jaccard similarity of one-rating visitors' lists that choose accepts: on
# average, a visitor's films share at least half their genres with the film the visitor rated.
# On ml-latest-small, a visitor who rated only Toy Story five stars got 4 to 6 children's or
# animated films out of 10 from rows near 0.42, and 8 or 9 from the chosen row at 0.54. Rows near
# 0.25 gave every visitor the same popular dramas. Other catalogues may need another value.
MIN_VISITOR_JACCARD = 0.5


@dataclass(frozen=True)
class TuneRow:
    """One scored setting: the config (support settings included) and its validation numbers."""

    config: als.ALSConfig
    rmse: float
    ndcg_at_10: float
    recall_at_10: float
    visitor_genre_jaccard: float


def validation_split(train: RatingsData, fraction: float = 0.125, seed: int = 0) -> EvaluationData:
    """Hold out a random `fraction` of the training ratings as validation rows.

    The fitting part keeps the id tables, so validation rows of users or items that lost all
    their ratings still have indices (and are predicted like any cold row). Raises ValueError
    when fraction is not in (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: must be between 0 and 1, got {fraction}")
    held_out = np.random.default_rng(seed).random(train.nnz) < fraction
    fit = dataclasses.replace(
        train,
        user_idx=train.user_idx[~held_out], item_idx=train.item_idx[~held_out],
        rating=train.rating[~held_out], timestamp=train.timestamp[~held_out],
    )
    return EvaluationData(
        train=fit,
        test_user_ids=train.user_ids[train.user_idx[held_out]],
        test_user_idx=train.user_idx[held_out].astype(np.int32),
        test_item_idx=train.item_idx[held_out].astype(np.int32),
        test_rating=train.rating[held_out].astype(np.float64),
        test_timestamp=train.timestamp[held_out],
    )


def grid_configs(
    base: als.ALSConfig,
    penalties: Sequence[tuple[float, float]] = DEFAULT_PENALTIES,
    grid: dict[str, Sequence] | None = None,
) -> list[als.ALSConfig]:
    """Every combination of the (reg_count_exponent, reg_factors) pairs and the grid's lists."""
    grid = DEFAULT_GRID if grid is None else grid
    names = list(grid)
    configs = []
    for (exponent, reg_factors), values in itertools.product(penalties, itertools.product(*grid.values())):
        overrides = dict(zip(names, values), reg_count_exponent=exponent, reg_factors=reg_factors)
        configs.append(dataclasses.replace(base, **overrides))
    return configs


def search(
    validation: EvaluationData,
    configs: Sequence[als.ALSConfig],
    support_weights: Sequence[float] = DEFAULT_SUPPORT_WEIGHTS,
    support_half_counts: Sequence[float] = DEFAULT_SUPPORT_HALF_COUNTS,
    *,
    rating_min: float,
    rating_max: float,
    progress: bool = True,
) -> list[TuneRow]:
    """Train each config on validation.train and score it with every support weight and half count.

    With a support weight of 0 the half count changes nothing, so only the first half count is
    scored for it.
    """
    fit = validation.train
    counts = item_rating_count(fit)
    candidates = counts > 0
    cases = top_n_cases(validation)
    visitor_items = _visitor_items(fit, counts)

    rows = []
    for config in tqdm(configs, desc="tune", unit="model", disable=not progress):
        model = train_on(fit, config)
        rmse = als.rmse(clipped_predictions(model, validation, rating_min, rating_max), validation.test_rating)
        pairs = [
            (weight, half_count) for weight in support_weights for half_count in support_half_counts
            if weight != 0.0 or half_count == support_half_counts[0]
        ]
        for weight, half_count in pairs:
            weighted = dataclasses.replace(config, support_weight=weight, support_half_count=half_count)
            top_n = top_n_metrics(cases, model_ranking(model, weighted, fit), candidates)
            row = TuneRow(
                config=weighted,
                rmse=rmse,
                ndcg_at_10=top_n["ndcg_at_10"],
                recall_at_10=top_n["recall_at_10"],
                visitor_genre_jaccard=visitor_genre_jaccard(
                    model, weighted, fit, counts, visitor_items, rating_max
                ),
            )
            rows.append(row)
            log.info(
                "tune row scored %s rmse=%.4f ndcg_at_10=%.4f visitor_genre_jaccard=%.3f",
                _settings_text(weighted), row.rmse, row.ndcg_at_10, row.visitor_genre_jaccard,
            )
    return rows


def choose(
    rows: Sequence[TuneRow], rmse_tolerance: float = 0.005, min_visitor_jaccard: float = MIN_VISITOR_JACCARD
) -> TuneRow:
    """Return the row with the best ndcg_at_10 among those close to the best rmse with coherent visitors.

    Falls back to ignoring min_visitor_jaccard when no row within the rmse tolerance meets it.
    Raises ValueError for an empty list.
    """
    if not rows:
        raise ValueError("rows: must not be empty")
    best_rmse = min(row.rmse for row in rows)
    accurate = [row for row in rows if row.rmse <= best_rmse + rmse_tolerance]
    coherent = [row for row in accurate if row.visitor_genre_jaccard >= min_visitor_jaccard]
    if not coherent:
        log.warning("no row meets min_visitor_jaccard=%.3f, choosing by ndcg alone", min_visitor_jaccard)
        coherent = accurate
    return max(coherent, key=lambda row: (row.ndcg_at_10, -row.rmse))


def visitor_genre_jaccard(
    model: als.ALSModel,
    config: als.ALSConfig,
    data: RatingsData,
    counts: np.ndarray,
    visitor_items: np.ndarray,
    rating: float,
    n: int = 10,
) -> float:
    """Mean genre Jaccard similarity between each one-rating visitor's top n and the rated item.

    Each item in visitor_items gets one visitor who rated only it, with `rating` stars. NaN when
    visitor_items is empty.
    """
    if len(visitor_items) == 0:
        return float("nan")
    genre_sets = _genre_sets(data)
    similarities = []
    for item_idx in visitor_items.tolist():
        bias, factors = als.fold_in(np.array([item_idx]), np.array([rating], np.float32), model, config)
        weight = float(als.support_weights(config.support_weight, config.support_half_count, 1))
        scores = als.ranking_scores(bias, factors, model.item_bias, model.item_factors, counts, weight)
        ranked = als.top_n(scores, n, exclude=np.array([item_idx]))
        rated = genre_sets[item_idx]
        similarities.extend(len(rated & genre_sets[i]) / len(rated | genre_sets[i]) for i in ranked.tolist())
    return float(np.mean(similarities))


def _visitor_items(data: RatingsData, counts: np.ndarray) -> np.ndarray:
    has_genres = np.diff(data.item_genres_indptr) > 0
    ranked = np.lexsort((np.arange(len(counts)), -counts))
    return ranked[has_genres[ranked] & (counts[ranked] > 0)][:VISITOR_ITEMS]


def _genre_sets(data: RatingsData) -> list[frozenset[int]]:
    bounds = data.item_genres_indptr.tolist()
    indices = data.item_genres_indices.tolist()
    return [frozenset(indices[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


# Config fields that tell the rows of a search apart, in the order they are printed.
SETTING_NAMES = (
    "factors", "reg_factors", "reg_count_exponent", "reg_bias", "reg_genre", "support_weight", "support_half_count",
)


def _settings_text(config: als.ALSConfig) -> str:
    return " ".join(f"{name}={getattr(config, name):g}" for name in SETTING_NAMES)


def format_table(rows: Sequence[TuneRow], chosen: TuneRow | None = None) -> str:
    """Return the rows as a fixed-width text table, the chosen one marked with '*'."""
    headers = (
        "", "factors", "reg_f", "exp", "reg_b", "reg_g", "support", "half", "rmse", "ndcg@10", "recall@10", "visitor",
    )
    lines = [" ".join(f"{h:>9}" for h in headers)]
    for row in rows:
        c = row.config
        cells = (
            "*" if row is chosen else "", f"{c.factors}", f"{c.reg_factors:g}", f"{c.reg_count_exponent:g}",
            f"{c.reg_bias:g}", f"{c.reg_genre:g}", f"{c.support_weight:g}", f"{c.support_half_count:g}",
            f"{row.rmse:.4f}",
            f"{row.ndcg_at_10:.4f}", f"{row.recall_at_10:.4f}", f"{row.visitor_genre_jaccard:.3f}",
        )
        lines.append(" ".join(f"{cell:>9}" for cell in cells))
    return "\n".join(lines)


def write_svg(rows: Sequence[TuneRow], chosen: TuneRow | None, path: Path) -> None:
    """Plot validation NDCG@10 against RMSE, one dot per row, as a standalone SVG file.

    Dot colour shows visitor_genre_jaccard (grey low, blue high); the chosen row is ringed red.
    """
    width, height, margin = 640, 440, 60
    rmse = np.array([row.rmse for row in rows])
    ndcg = np.array([row.ndcg_at_10 for row in rows])
    x_low, x_high = _padded_range(rmse)
    y_low, y_high = _padded_range(ndcg)

    def x_of(value: float) -> float:
        return margin + (value - x_low) / (x_high - x_low) * (width - 2 * margin)

    def y_of(value: float) -> float:
        return height - margin - (value - y_low) / (y_high - y_low) * (height - 2 * margin)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{margin}" y1="{height - margin}" x2="{width - margin}" y2="{height - margin}" stroke="black"/>',
        f'<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{height - margin}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">validation RMSE (lower is better)</text>',
        f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
        "validation NDCG@10</text>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        x_value = x_low + fraction * (x_high - x_low)
        y_value = y_low + fraction * (y_high - y_low)
        parts.append(f'<text x="{x_of(x_value):.1f}" y="{height - margin + 16}" text-anchor="middle">{x_value:.4f}</text>')
        parts.append(f'<text x="{margin - 6}" y="{y_of(y_value) + 4:.1f}" text-anchor="end">{y_value:.3f}</text>')
    for row in rows:
        share = 0.0 if math.isnan(row.visitor_genre_jaccard) else min(max(row.visitor_genre_jaccard, 0.0), 1.0)
        blue = int(90 + 165 * share)
        colour = f"rgb({int(200 - 170 * share)},{int(200 - 100 * share)},{blue})"
        parts.append(
            f'<circle cx="{x_of(row.rmse):.1f}" cy="{y_of(row.ndcg_at_10):.1f}" r="4" fill="{colour}">'
            f"<title>{_settings_text(row.config)}</title></circle>"
        )
    if chosen is not None:
        parts.append(
            f'<circle cx="{x_of(chosen.rmse):.1f}" cy="{y_of(chosen.ndcg_at_10):.1f}" r="8" '
            'fill="none" stroke="red" stroke-width="2"/>'
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = (high - low) * 0.05 or 0.01
    return low - pad, high + pad
