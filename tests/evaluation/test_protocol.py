"""The evaluation protocol on a tiny hand-made split, against values worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import als
from evaluation.protocol import TopNCase, rating_errors, top_n_metrics
from evaluation.run import evaluate, load_evaluation_data, top_n_cases

TRAIN = """userId,movieId,rating,timestamp
1,10,4.0,100
1,20,3.0,101
2,10,5.0,102
2,30,2.0,103
3,20,4.0,104
"""
# User 1: relevant 30 and 40 (40 is unknown to training). User 2: relevant 20.
# User 3: nothing relevant, so no top-N case. User 9 is unknown to training.
TEST = """userId,movieId,rating,timestamp
1,30,4.5,200
1,40,4.0,201
2,20,4.0,202
3,10,2.0,203
9,10,5.0,204
"""
MOVIES = """movieId,title,genres
10,Ten (2000),Drama
20,Twenty (2000),Comedy
30,Thirty (2000),Drama|Comedy
40,Forty (2000),Horror
"""


@pytest.fixture
def tiny_split(tmp_path: Path):
    (tmp_path / "train.csv").write_text(TRAIN)
    (tmp_path / "test.csv").write_text(TEST)
    (tmp_path / "movies.csv").write_text(MOVIES)
    return load_evaluation_data(tmp_path / "train.csv", tmp_path / "test.csv", None)


def test_rating_errors_hand_computed():
    predictions = np.array([4.0, 3.0, 2.5])
    truth = np.array([5.0, 3.0, 4.5])
    known = np.array([True, True, False])
    result = rating_errors(predictions, truth, known)
    assert result["rmse"] == pytest.approx(math.sqrt((1 + 0 + 4) / 3))
    assert result["mae"] == pytest.approx((1 + 0 + 2) / 3)
    assert result["rmse_known"] == pytest.approx(math.sqrt(1 / 2))


def test_top_n_metrics_hand_computed():
    # Items 0..4; item 4 is not a candidate. Ties go to the lower index.
    candidates = np.array([True, True, True, True, False])
    scores = {0: np.array([0.9, 0.5, 0.5, 0.1, 9.0]), 1: np.array([0.0, 0.0, 0.0, 0.0, 0.0])}
    cases = [
        # Ranked: 1, 2 (tie, lower index first), 3 after excluding 0. Hit at rank 2 only.
        TopNCase(user_idx=0, train_items=np.array([0]), relevant_items=np.array([2, -1])),
        # Ranked: 0, 1, 2, 3. Hit at rank 1.
        TopNCase(user_idx=1, train_items=np.zeros(0, np.int32), relevant_items=np.array([0])),
    ]
    result = top_n_metrics(cases, lambda user_idx: scores[user_idx], candidates, k=2)
    # One hit at rank 2; the ideal list has both relevant items at ranks 1 and 2.
    ndcg_user0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert result["recall_at_2"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert result["ndcg_at_2"] == pytest.approx((ndcg_user0 + 1.0) / 2)
    assert result["coverage_at_2"] == pytest.approx(3 / 4)  # items 0, 1, 2 were shown


def test_top_n_cases_of_the_tiny_split(tiny_split):
    cases = top_n_cases(tiny_split)
    item_ids = tiny_split.train.item_ids.tolist()
    # Users 1, 2 and the unknown user 9; user 3 has nothing relevant.
    assert len(cases) == 3
    by_user = {case.user_idx: case for case in cases}
    user_1 = tiny_split.train.user_ids.tolist().index("1")
    assert sorted(item_ids[i] for i in by_user[user_1].relevant_items) == ["30", "40"]
    assert by_user[-1].train_items.size == 0
    assert [item_ids[i] for i in by_user[-1].relevant_items] == ["10"]


def test_evaluate_a_model_that_learns_nothing(tiny_split):
    # Penalties so large that every bias and factor stays at 0: the prediction is the global
    # mean 3.6 for every row, and with one support weight for all users the ranking is by
    # training count.
    config = als.ALSConfig(
        factors=2, reg_factors=1e9, reg_bias=1e9, epochs=2, support_weight=1.0, support_half_count=0.0
    )
    result = evaluate(tiny_split, config, 0.5, 5.0)

    truth = np.array([4.5, 4.0, 4.0, 2.0, 5.0])
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean((3.6 - truth) ** 2)), abs=1e-6)
    assert result["mae"] == pytest.approx(np.mean(np.abs(3.6 - truth)), abs=1e-6)
    # Known rows: users 1, 2, 3 with items 30, 20, 10 (item 40 is unrated, user 9 unknown).
    known = np.array([4.5, 4.0, 2.0])
    assert result["rmse_known"] == pytest.approx(math.sqrt(np.mean((3.6 - known) ** 2)), abs=1e-6)
    assert result["rmse_cold_items"] == pytest.approx(0.4, abs=1e-6)  # item 40, rated 4.0

    # Counts: 10 -> 2, 20 -> 2, 30 -> 1. User 1 (rated 10, 20) is left with 30: a hit at rank 1,
    # recall 1/2 (40 is unreachable), NDCG 1 / (1 + 1/log2(3)). User 9 is new and rated 10 at
    # 5.0: ranking 10, 20 (tie, lower id), 30 puts it first: recall 1, NDCG 1. User 2 (rated
    # 10, 30) is left with 20: recall 1, NDCG 1.
    ndcg_user_1 = 1 / (1 + 1 / math.log2(3))
    assert result["top_n_users"] == 3
    assert result["recall_at_10"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result["ndcg_at_10"] == pytest.approx((ndcg_user_1 + 1 + 1) / 3)
    assert result["popularity"]["ndcg_at_10"] == pytest.approx(result["ndcg_at_10"])


def test_evaluate_reads_the_dat_layout(tmp_path: Path):
    (tmp_path / "ratings.dat").write_text("1::10::4::100\n1::20::3::101\n2::10::5::102\n")
    (tmp_path / "test.dat").write_text("2::20::4::200\n")
    (tmp_path / "movies.dat").write_text("10::Ten (2000)::Drama\n20::Twenty (2000)::Comedy\n")
    data = load_evaluation_data(tmp_path / "ratings.dat", tmp_path / "test.dat", None)
    assert data.train.nnz == 3
    assert data.train.genre_names.tolist() == ["Comedy", "Drama"]
    assert data.test_item_idx.tolist() == [data.train.item_ids.tolist().index("20")]
