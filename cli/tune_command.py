"""`streamrec tune`: search hyperparameters on a validation part of a training file."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import als
from evaluation import tune
from evaluation.run import load_training_data
from store.settings import Settings

log = logging.getLogger(__name__)


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="grid-search hyperparameters on a validation part of --train, print the table",
        description="Hold out part of the training ratings, train one model per grid point on the "
        "rest and score every support weight and half count on the held-out part (never on a test file). The "
        "chosen row has the best NDCG@10 among those within --rmse-tolerance of the best RMSE "
        "whose one-rating visitors get genre-coherent lists (--min-visitor-jaccard).",
    )
    parser.add_argument("--train", type=Path, required=True, help="training ratings file (any MovieLens layout)")
    parser.add_argument("--movies", type=Path, default=None, help="movies file with titles and genres")
    parser.add_argument("--validation-fraction", type=float, default=0.125, help="share of ratings held out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--factors", type=_int_list, default=None, help="comma-separated list")
    parser.add_argument("--reg-bias", type=_float_list, default=None, help="comma-separated list")
    parser.add_argument("--reg-genre", type=_float_list, default=None, help="comma-separated list")
    parser.add_argument(
        "--penalties", type=_pair_list, default=None,
        help="comma-separated reg_count_exponent:reg_factors pairs, e.g. 0:11,0.5:1.4",
    )
    parser.add_argument("--support-weights", type=_float_list, default=None, help="comma-separated list")
    parser.add_argument("--support-half-counts", type=_float_list, default=None, help="comma-separated list")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per model")
    parser.add_argument("--rmse-tolerance", type=float, default=0.005, help="allowed RMSE above the best")
    parser.add_argument("--min-visitor-jaccard", type=float, default=tune.MIN_VISITOR_JACCARD,
                        help="lowest mean genre Jaccard of one-rating visitors' lists")
    parser.add_argument("--plot", type=Path, default=None, help="write an SVG plot of NDCG@10 against RMSE")
    parser.add_argument("--json", action="store_true", help="print the rows and the choice as JSON")
    parser.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace, settings: Settings) -> int:
    base = als.ALSConfig()
    if args.epochs is not None:
        base = dataclasses.replace(base, epochs=args.epochs)
    grid = dict(tune.DEFAULT_GRID)
    for name in ("factors", "reg_bias", "reg_genre"):
        if getattr(args, name) is not None:
            grid[name] = getattr(args, name)
    penalties = args.penalties if args.penalties is not None else tune.DEFAULT_PENALTIES
    weights = args.support_weights if args.support_weights is not None else tune.DEFAULT_SUPPORT_WEIGHTS
    half_counts = (
        args.support_half_counts if args.support_half_counts is not None else tune.DEFAULT_SUPPORT_HALF_COUNTS
    )

    train = load_training_data(args.train, args.movies)
    validation = tune.validation_split(train, args.validation_fraction, args.seed)
    configs = tune.grid_configs(base, penalties, grid)
    log.info("tune started models=%d support_weights=%d support_half_counts=%d validation_ratings=%d",
             len(configs), len(weights), len(half_counts), len(validation.test_rating))
    rows = tune.search(
        validation, configs, weights, half_counts, rating_min=settings.rating_min, rating_max=settings.rating_max
    )
    chosen = tune.choose(rows, args.rmse_tolerance, args.min_visitor_jaccard)

    if args.plot is not None:
        tune.write_svg(rows, chosen, args.plot)
        log.info("tune plot written path=%s", args.plot)
    if args.json:
        print(json.dumps({
            "rows": [_row_dict(row) for row in rows],
            "chosen": _row_dict(chosen),
        }, indent=2))
        return 0
    print(tune.format_table(rows, chosen))
    print()
    print("chosen (*): " + " ".join(f"{name}={getattr(chosen.config, name):g}" for name in tune.SETTING_NAMES))
    print(f"validation rmse={chosen.rmse:.4f} ndcg_at_10={chosen.ndcg_at_10:.4f} "
          f"recall_at_10={chosen.recall_at_10:.4f} visitor_genre_jaccard={chosen.visitor_genre_jaccard:.3f}")
    return 0


def _row_dict(row: tune.TuneRow) -> dict:
    return {
        "config": row.config.to_dict(), "rmse": row.rmse, "ndcg_at_10": row.ndcg_at_10,
        "recall_at_10": row.recall_at_10, "visitor_genre_jaccard": row.visitor_genre_jaccard,
    }


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") from None


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None


def _pair_list(text: str) -> tuple[tuple[float, float], ...]:
    try:
        return tuple(
            (float(exponent), float(reg)) for exponent, reg in (part.split(":") for part in text.split(","))
        )
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated exponent:reg_factors pairs, got {text!r}"
        ) from None
