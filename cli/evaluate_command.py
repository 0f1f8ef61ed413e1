"""`streamrec evaluate`: train on one ratings file and report accuracy on another."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import als
from evaluation.replay import MODES, replay
from evaluation.run import evaluate, genre_ablation, load_evaluation_data, movies_file_beside
from store.settings import Settings

log = logging.getLogger(__name__)

HYPERPARAMETERS = {
    "factors": int, "reg_factors": float, "reg_bias": float, "reg_genre": float,
    "reg_count_exponent": float, "support_weight": float, "support_half_count": float, "epochs": int,
}


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="train on --train, report RMSE, MAE, Recall@10 and NDCG@10 on --test",
        description="Train on a ratings file and evaluate on another. Both may be in any MovieLens "
        "layout (ratings.csv, ratings.dat with '::', u.data with tabs). Genres come from a movies "
        "file beside the training file (movies.csv, movies.dat or u.item), or from --movies.",
    )
    parser.add_argument("--train", type=Path, required=True, help="training ratings file")
    parser.add_argument("--test", type=Path, required=True, help="test ratings file")
    parser.add_argument("--movies", type=Path, default=None, help="movies file with titles and genres")
    parser.add_argument("--no-genres", action="store_true", help="train without the genre prior")
    parser.add_argument(
        "--compare-genres", action="store_true",
        help="also train with and without genres and report RMSE on test items without training ratings",
    )
    parser.add_argument(
        "--replay", action="store_true",
        help="replay the test ratings in time order through the worker's refresh code "
        "(static, incremental, incremental with periodic retrains) and report prequential metrics",
    )
    parser.add_argument("--retrain-every", type=int, default=None,
                        help="ratings between two retrains in --replay (default: a fifth of the test file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    for name, kind in HYPERPARAMETERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override {name}")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None}
    if args.no_genres:
        overrides["use_genres"] = False
    config = dataclasses.replace(als.ALSConfig(), **overrides)
    if args.movies is None and movies_file_beside(args.train) is None:
        log.warning("no movies file beside %s; training without genres (give --movies FILE)", args.train)
    data = load_evaluation_data(args.train, args.test, args.movies)
    result = evaluate(data, config, settings.rating_min, settings.rating_max)
    if args.compare_genres:
        result["genres"] = genre_ablation(data, config, settings.rating_min, settings.rating_max)
    if args.replay:
        result.update(replay(
            data, config, settings.rating_min, settings.rating_max, retrain_every=args.retrain_every,
        ))

    if args.json:
        print(json.dumps(_plain_json(result), indent=2))
        return 0
    for key in ("rmse", "rmse_known", "mae", "rmse_cold_items", "recall_at_10", "ndcg_at_10", "coverage_at_10"):
        print(f"{key:16} {result[key]:.4f}")
    print(f"{'popularity':16} recall_at_10={result['popularity']['recall_at_10']:.4f} "
          f"ndcg_at_10={result['popularity']['ndcg_at_10']:.4f}")
    print(f"{'train_seconds':16} {result['train_seconds']:.2f}")
    for key in ("train_ratings", "test_ratings", "test_known_ratings", "test_cold_item_ratings",
                "users", "items", "top_n_users"):
        print(f"{key:16} {result[key]}")
    if args.compare_genres:
        print("genres           " + " ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                                             for key, value in result["genres"].items()))
    if args.replay:
        print(f"replay (retrain every {result['retrain_every']} ratings)")
        for mode in MODES:
            row = result[mode]
            print(f"  {mode:20} rmse={row['rmse']:.4f} mae={row['mae']:.4f} "
                  f"hits_at_10={row['hits_at_10']:.4f} retrains={row['retrains']}")
    return 0


def _plain_json(value: object) -> object:
    """Return value with numpy scalars as Python numbers and NaN as None, which JSON lacks."""
    if isinstance(value, dict):
        return {key: _plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(item) for item in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


