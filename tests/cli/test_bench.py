"""The bench's synthetic data and the shape of its report, on tiny sizes."""

import argparse
import os
import shutil

import numpy as np
import pytest

from cli import bench_command
from cli.bench import als_stage, data, flow_stage
from cli.bench.machine import core_check_seconds
from cli.main import build_parser


def test_parse_size_reads_suffixes():
    assert data.parse_size("1M") == 1_000_000
    assert data.parse_size("250k") == 250_000
    assert data.parse_size("32M") == data.FULL_RATINGS
    assert data.parse_size("5000") == 5000


@pytest.mark.parametrize("text", ["", "lots", "10", "40M"])
def test_parse_size_rejects_bad_values(text):
    with pytest.raises(ValueError, match="^size: "):
        data.parse_size(text)


def test_generated_data_has_scaled_shape():
    generated = data.generate(1_000_000)
    fraction = 1_000_000 / data.FULL_RATINGS

    assert generated.n_ratings == 1_000_000
    assert generated.n_users == round(data.FULL_USERS * fraction)
    assert generated.n_items == round(data.FULL_ITEMS * fraction)
    counts = np.bincount(generated.user_idx, minlength=generated.n_users)
    assert counts.min() >= data.MIN_USER_RATINGS
    # Power law on the item side: the most-rated item has about its MovieLens-32M share.
    top = np.bincount(generated.item_idx).max()
    assert 0.5 * data.TOP_ITEM_SHARE < top / generated.n_ratings < 2 * data.TOP_ITEM_SHARE


def test_generated_ratings_are_unique_sorted_half_stars():
    generated = data.generate(20_000)
    keys = generated.user_idx.astype(np.int64) * generated.n_items + generated.item_idx
    assert np.all(np.diff(keys) > 0)
    assert set(np.unique(generated.rating)) <= set(np.arange(1, 11) / 2.0)
    assert generated.item_idx.max() < generated.n_items


def test_generated_genres_are_csr_of_distinct_genres():
    generated = data.generate(20_000)
    per_item = np.diff(generated.genre_indptr)
    assert generated.genre_indptr.shape == (generated.n_items + 1,)
    assert per_item.min() >= 1
    assert per_item.max() <= 3
    for item in range(generated.n_items):
        row = generated.genre_indices[generated.genre_indptr[item]:generated.genre_indptr[item + 1]]
        assert np.all(np.diff(row) > 0)
    assert generated.genre_indices.max() < data.N_GENRES


def test_generation_is_repeatable():
    first = data.generate(5_000, seed=3)
    second = data.generate(5_000, seed=3)
    np.testing.assert_array_equal(first.item_idx, second.item_idx)
    np.testing.assert_array_equal(first.rating, second.rating)


def test_write_parquet_keeps_ratings_and_genres(tmp_path):
    import duckdb

    generated = data.generate(5_000)
    ratings_path, genres_path = data.write_parquet(generated, tmp_path)
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{ratings_path}'").fetchone()[0] == 5_000
    assert con.execute(f"SELECT count(*) FROM '{genres_path}'").fetchone()[0] == generated.genre_indices.shape[0]


def test_percentiles_in_milliseconds():
    result = flow_stage.percentiles_ms([0.001] * 98 + [0.5, 0.5])
    assert result["p50_ms"] == 1.0
    assert result["p99_ms"] == 500.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_bench_report_has_every_section(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_command, "FRESHNESS_SECONDS", 0.5)
    monkeypatch.setattr(bench_command, "QUERY_CALLS", 50)
    monkeypatch.setattr(flow_stage, "FRESHNESS_GRACE", 1.0)
    work = tmp_path / "work"
    work.mkdir()

    report = bench_command.bench(3_000, work, tmp_path / "kept", ingest_events=300)

    assert {"machine", "data", "als", "retrain", "ingest", "freshness", "query"} <= set(report)
    assert len(report["als"]) == 4
    for result in report["als"]:
        assert {"ratings", "factors", "genres", "seconds_per_epoch", "peak_rss_mb"} <= set(result)
        assert result["ratings"] == 3_000
    assert {"ratings", "epochs", "seconds"} <= set(report["retrain"])
    assert report["retrain"]["lists_written"] == report["data"]["users"]
    assert {"events", "events_per_second"} <= set(report["ingest"])
    assert {"events_per_second", "p50_ms", "p95_ms", "p99_ms"} <= set(report["freshness"])
    assert {"python_p50_ms", "python_p99_ms", "redis_p50_ms", "redis_p99_ms"} <= set(report["query"])
    assert (tmp_path / "kept" / "ratings.parquet").is_file()


def test_parse_stages_names_the_unknown_stage():
    assert bench_command.parse_stages("query, als") == ("query", "als")
    with pytest.raises(argparse.ArgumentTypeError, match="'als,train'"):
        bench_command.parse_stages("als,train")


def test_stages_error_names_option_once(capsys):
    # argparse already starts the message with "argument --stages:", which the text repeated.
    parser = build_parser(["bench"])
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--stages", "als,train"])

    error = capsys.readouterr().err
    assert "argument --stages: invalid stage 'train'" in error
    assert error.count("--stages:") == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_bench_runs_only_the_chosen_stages(tmp_path):
    work = tmp_path / "work"
    work.mkdir()

    report = bench_command.bench(3_000, work, None, ingest_events=200, stages=("ingest",))

    assert set(report) == {"machine", "data", "ingest"}
    assert report["ingest"]["events"] == 200


def test_core_check_times_each_core_and_restores_affinity():
    cores = os.sched_getaffinity(0)

    seconds = core_check_seconds(iterations=300_000)

    assert len(seconds) == len(cores)
    assert all(value > 0 for value in seconds)
    assert os.sched_getaffinity(0) == cores


def test_scaling_epochs_cover_the_full_run():
    assert bench_command.scaling_epochs(1_000_000, 32_000_204) == 160
    assert bench_command.scaling_epochs(10_000_000, 32_000_204) == 16
    assert bench_command.scaling_epochs(1_000, 32_000_204) == bench_command.MAX_SCALING_EPOCHS
    assert bench_command.scaling_epochs(5_000_000, 5_000_000) == bench_command.TIMED_EPOCHS


def test_scaling_takes_medians_over_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_command, "SCALING_SIZES", ("1k", "2k"))
    # Seconds per epoch of each call, by size: the second round runs on a machine twice as slow.
    seconds = {1_000: [1e-3, 2e-3, 1e-3], 2_000: [3e-3, 6e-3, 2.4e-3], 4_000: [4e-3, 8e-3, 4.4e-3]}
    calls = []

    def fake_time_epochs(directory, factors, use_genres, epochs):
        count = 4_000 if directory == tmp_path / "full" else data.parse_size(directory.name.split("-")[1])
        calls.append(count)
        return {"seconds_per_epoch": seconds[count][calls.count(count) - 1]}

    monkeypatch.setattr(als_stage, "time_epochs", fake_time_epochs)

    result = bench_command.scaling({}, tmp_path / "full", 4_000, tmp_path)

    assert calls == [1_000, 2_000, 4_000] * bench_command.SCALING_ROUNDS
    assert result["ratio_by_round"] == [
        {"1000": 1.0, "2000": 1.5, "4000": 1.0},
        {"1000": 1.0, "2000": 1.5, "4000": 1.0},
        {"1000": 1.0, "2000": 1.2, "4000": 1.1},
    ]
    assert result["ratio_to_smallest"] == {"1000": 1.0, "2000": 1.5, "4000": 1.0}
    assert result["seconds_per_million_ratings"] == {"1000": 1.0, "2000": 1.5, "4000": 1.1}
    assert not (tmp_path / "arrays-1k").exists()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_query_alone_reports_no_lists_read(tmp_path, monkeypatch):
    # The retrain's lists are deleted after timing, so without the freshness stage the query
    # stage finds no list to read. The report used to leave the Redis keys out without a word.
    monkeypatch.setattr(bench_command, "QUERY_CALLS", 50)
    work = tmp_path / "work"
    work.mkdir()

    report = bench_command.bench(3_000, work, None, ingest_events=200, stages=("query",))

    assert set(report) == {"machine", "data", "load", "retrain", "query"}
    assert report["query"]["redis_lists"] == 0
    assert "redis_p99_ms" not in report["query"]
