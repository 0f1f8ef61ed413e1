"""The streaming replay predicts each rating before applying it, with the worker's fold-in."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import als
from evaluation.replay import replay
from evaluation.run import evaluate, load_evaluation_data, train_on

TRAIN = """userId,movieId,rating,timestamp
1,10,4.0,100
1,20,3.0,101
1,30,5.0,102
2,10,5.0,103
2,30,2.0,104
3,20,4.0,105
3,30,4.5,106
"""
# User 9 is new: their first rating can only get the fallback, their second is predicted after
# the first was folded in.
TEST = """userId,movieId,rating,timestamp
9,10,5.0,200
9,30,4.0,201
1,40,3.5,202
2,20,1.0,203
9,20,2.0,204
"""
MOVIES = """movieId,title,genres
10,Ten (2000),Drama
20,Twenty (2000),Comedy
30,Thirty (2000),Drama|Comedy
40,Forty (2000),Horror
"""
CONFIG = als.ALSConfig(factors=2, reg_factors=1.0, reg_bias=1.0, epochs=5)


@pytest.fixture
def tiny_split(tmp_path: Path):
    (tmp_path / "train.csv").write_text(TRAIN)
    (tmp_path / "test.csv").write_text(TEST)
    (tmp_path / "movies.csv").write_text(MOVIES)
    return load_evaluation_data(tmp_path / "train.csv", tmp_path / "test.csv", None)


def test_static_replay_rmse_equals_evaluate(tiny_split):
    replayed = replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=1, progress=False)
    evaluated = evaluate(tiny_split, CONFIG, 0.5, 5.0)
    assert replayed["static"]["rmse"] == pytest.approx(evaluated["rmse"], rel=1e-6)
    assert replayed["static"]["ratings"] == 5
    assert replayed["static"]["relevant_ratings"] == 2


def test_incremental_replay_folds_in_before_the_next_rating(tiny_split):
    model = train_on(tiny_split.train, CONFIG)
    item_ids = tiny_split.train.item_ids.tolist()
    ten, thirty, twenty = item_ids.index("10"), item_ids.index("30"), item_ids.index("20")
    bias_1, factors_1 = als.fold_in(np.array([ten]), np.array([5.0], np.float32), model, CONFIG)
    bias_2, factors_2 = als.fold_in(np.array([ten, thirty]), np.array([5.0, 4.0], np.float32), model, CONFIG)

    def predicted(bias, factors, item):
        raw = model.global_mean + bias + model.item_bias[item] + float(factors @ model.item_factors[item])
        return min(max(raw, 0.5), 5.0)

    # Static never learns about user 9: every one of their ratings gets global_mean + c_n.
    static = {i: min(max(model.global_mean + model.item_bias[i], 0.5), 5.0) for i in (ten, thirty, twenty)}
    rows_user_9 = [(static[ten], 5.0), (predicted(bias_1, factors_1, thirty), 4.0), (predicted(bias_2, factors_2, twenty), 2.0)]

    result = replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=1, retrain_every=100, progress=False)
    static_result = replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=1, progress=False)["static"]
    # Users 1 and 2 rate once each in the test, so their rows are predicted by their trained
    # rows in both modes; the difference in squared error comes from user 9 alone.
    incremental_error = sum((p - r) ** 2 for p, r in rows_user_9)
    static_error = (static[ten] - 5.0) ** 2 + (static[thirty] - 4.0) ** 2 + (static[twenty] - 2.0) ** 2
    difference = result["incremental"]["rmse"] ** 2 * 5 - static_result["rmse"] ** 2 * 5
    assert difference == pytest.approx(incremental_error - static_error, abs=1e-5)


def test_replay_batches_predict_before_applying(tiny_split):
    # With one batch holding every rating, nothing is folded in before it is predicted.
    result = replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=5, progress=False)
    assert result["incremental"]["rmse"] == pytest.approx(result["static"]["rmse"], rel=1e-9)


def test_replay_retrains_every_n_ratings(tiny_split):
    result = replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=1, retrain_every=2, progress=False)
    assert result["incremental_retrain"]["retrains"] == 2  # after ratings 2 and 4, not after the last
    assert result["incremental"]["retrains"] == 0
    assert math.isfinite(result["incremental_retrain"]["rmse"])


def test_replay_rejects_bad_sizes(tiny_split):
    with pytest.raises(ValueError, match="batch_size: must be >= 1, got 0"):
        replay(tiny_split, CONFIG, 0.5, 5.0, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="retrain_every: must be >= 1, got 0"):
        replay(tiny_split, CONFIG, 0.5, 5.0, retrain_every=0, progress=False)
