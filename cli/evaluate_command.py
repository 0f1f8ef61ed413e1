"""`streamrec evaluate`: train on one ratings file and report accuracy on another."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import als
from evaluation.run import evaluate, load_evaluation_data
from store.settings import Settings

log = logging.getLogger(__name__)

HYPERPARAMETERS = {
    "factors": int, "reg_factors": float, "reg_bias": float, "reg_genre": float, "epochs": int,
}


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="train on --train, report RMSE, MAE, Recall@10 and NDCG@10 on --test",
        description="Train on a ratings file (MovieLens ratings.csv layout) and evaluate on another. "
        "Genres come from a movies.csv beside the training file, or from --movies.",
    )
    parser.add_argument("--train", type=Path, required=True, help="training ratings file")
    parser.add_argument("--test", type=Path, required=True, help="test ratings file")
    parser.add_argument("--movies", type=Path, default=None, help="movies file with titles and genres")
    parser.add_argument("--no-genres", action="store_true", help="train without the genre prior")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    for name, kind in HYPERPARAMETERS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"override {name}")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {name: getattr(args, name) for name in HYPERPARAMETERS if getattr(args, name) is not None}
    if args.no_genres:
        overrides["use_genres"] = False
    config = dataclasses.replace(als.ALSConfig(), **overrides)
    movies = args.movies
    if movies is None and not (args.train.parent / "movies.csv").exists():
        log.warning("no movies.csv beside %s; training without genres (give --movies FILE)", args.train)
    data = load_evaluation_data(args.train, args.test, movies)
    result = evaluate(data, config, settings.rating_min, settings.rating_max)

    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key in ("rmse", "rmse_known", "mae", "recall_at_10", "ndcg_at_10", "coverage_at_10"):
        print(f"{key:16} {result[key]:.4f}")
    print(f"{'popularity':16} recall_at_10={result['popularity']['recall_at_10']:.4f} "
          f"ndcg_at_10={result['popularity']['ndcg_at_10']:.4f}")
    print(f"{'train_seconds':16} {result['train_seconds']:.2f}")
    for key in ("train_ratings", "test_ratings", "test_known_ratings", "users", "items", "top_n_users"):
        print(f"{key:16} {result[key]}")
    return 0
