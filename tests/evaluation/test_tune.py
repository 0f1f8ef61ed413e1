"""The tuning search: its validation split, its choice rule, its table and its plot."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

import als
from evaluation import tune
from evaluation.run import load_training_data

TRAIN = "userId,movieId,rating,timestamp\n" + "".join(
    f"{user},{item},{1 + (user * item) % 5}.0,{user * 100 + item}\n"
    for user in range(1, 13) for item in range(10, 22) if (user + item) % 3
)
MOVIES = "movieId,title,genres\n" + "".join(
    f"{item},Film {item} (2000),{'Drama' if item % 2 else 'Comedy|Drama'}\n" for item in range(10, 22)
)


@pytest.fixture
def train(tmp_path: Path):
    (tmp_path / "train.csv").write_text(TRAIN)
    (tmp_path / "movies.csv").write_text(MOVIES)
    return load_training_data(tmp_path / "train.csv", None)


def _row(rmse: float, ndcg: float, visitor: float, support_weight: float = 0.0) -> tune.TuneRow:
    return tune.TuneRow(als.ALSConfig(support_weight=support_weight), rmse, ndcg, ndcg / 2, visitor)


def test_validation_split_partitions_the_training_ratings(train):
    validation = tune.validation_split(train, fraction=0.25, seed=1)
    held_out = len(validation.test_rating)
    assert 0 < held_out < train.nnz
    assert validation.train.nnz + held_out == train.nnz
    fit_pairs = set(zip(validation.train.user_idx.tolist(), validation.train.item_idx.tolist()))
    held_pairs = set(zip(validation.test_user_idx.tolist(), validation.test_item_idx.tolist()))
    assert not fit_pairs & held_pairs
    assert len(fit_pairs | held_pairs) == train.nnz
    with pytest.raises(ValueError, match="fraction: must be between 0 and 1, got 1.5"):
        tune.validation_split(train, fraction=1.5)


def test_choose_takes_best_ndcg_among_accurate_coherent_rows():
    rows = [
        _row(0.800, 0.10, 0.5),
        _row(0.803, 0.15, 0.4, 0.3),  # chosen: within 0.005 of 0.800 and coherent
        _row(0.804, 0.18, 0.1, 0.6),  # better NDCG but visitors get incoherent lists
        _row(0.900, 0.30, 0.9, 0.9),  # far less accurate
    ]
    assert tune.choose(rows, rmse_tolerance=0.005, min_visitor_jaccard=0.3) is rows[1]
    # Without a coherent row the rule falls back to NDCG among the accurate rows.
    assert tune.choose(rows[:3], rmse_tolerance=0.005, min_visitor_jaccard=0.6) is rows[2]
    with pytest.raises(ValueError, match="rows: must not be empty"):
        tune.choose([])


def test_grid_configs_combine_penalty_pairs_with_the_grid():
    configs = tune.grid_configs(als.ALSConfig(), [(0.0, 11.0), (0.5, 1.0)], {"reg_bias": (3.0, 10.0)})
    assert [(c.reg_count_exponent, c.reg_factors, c.reg_bias) for c in configs] == [
        (0.0, 11.0, 3.0), (0.0, 11.0, 10.0), (0.5, 1.0, 3.0), (0.5, 1.0, 10.0),
    ]


def test_search_scores_every_support_pair_on_one_model(train):
    validation = tune.validation_split(train, fraction=0.25, seed=0)
    configs = tune.grid_configs(als.ALSConfig(factors=2, epochs=3), [(0.5, 1.0)], {})
    rows = tune.search(
        validation, configs, [0.0, 0.5], [0.0, 4.0], rating_min=0.5, rating_max=5.0, progress=False
    )
    # A weight of 0 makes the half count irrelevant, so it is scored once.
    assert [(row.config.support_weight, row.config.support_half_count) for row in rows] == [
        (0.0, 0.0), (0.5, 0.0), (0.5, 4.0),
    ]
    assert len({row.rmse for row in rows}) == 1  # the support term never changes a prediction
    for row in rows:
        assert 0.0 <= row.ndcg_at_10 <= 1.0
        assert 0.0 <= row.visitor_genre_jaccard <= 1.0
    header = tune.format_table(rows, rows[1]).splitlines()[0]
    assert "support" in header
    assert "half" in header


def test_write_svg_draws_one_dot_per_row_and_rings_the_choice(tmp_path: Path):
    rows = [_row(0.80 + 0.01 * i, 0.1 + 0.01 * i, 0.1 * i) for i in range(4)]
    path = tmp_path / "tune.svg"
    tune.write_svg(rows, rows[2], path)
    root = ElementTree.parse(path).getroot()
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == len(rows) + 1
    assert circles[-1].get("stroke") == "red"
    assert np.isclose(float(circles[-1].get("cx")), float(circles[2].get("cx")))
