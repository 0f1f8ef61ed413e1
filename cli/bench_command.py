"""`streamrec bench`: time every stage on synthetic data of the MovieLens-32M shape, print JSON."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cli.bench import als_stage, data, flow_stage, store_stage
from cli.bench.machine import core_check_seconds, machine
from cli.bench.services import redis_server
from store.settings import Settings

log = logging.getLogger(__name__)

# Sizes whose seconds per epoch give the cost-per-rating ratio of a full run.
SCALING_SIZES = ("1M", "10M")
# Epochs per ALS timing. The figure is the median of all but the first, so one epoch slowed by
# another process on the machine does not decide it.
TIMED_EPOCHS = 5
# Most epochs a smaller size of the scaling section is timed for (see scaling_epochs).
MAX_SCALING_EPOCHS = 200
# Rounds of the scaling section. A round times every size once, one after the other, so a change
# in the speed of a shared machine between rounds moves all sizes of a round alike.
SCALING_ROUNDS = 3
FRESHNESS_RATE = 1000.0
FRESHNESS_SECONDS = 5.0
QUERY_CALLS = 2000
STAGES = ("als", "retrain", "ingest", "freshness", "query")


def parse_stages(text: str) -> tuple[str, ...]:
    """Parse --stages: names from STAGES separated by commas, in any order."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in STAGES]
    # argparse puts "argument --stages:" before the message.
    if unknown:
        raise argparse.ArgumentTypeError(
            f"invalid stage {unknown[0]!r}; expected names from {','.join(STAGES)}, got {text!r}"
        )
    if not names:
        raise argparse.ArgumentTypeError(f"no stage given; expected names from {','.join(STAGES)}")
    return names


def add_parsers(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench", help="time data generation, loading, training, retrain, ingest, freshness, queries",
        description="Time every stage of streamrec on synthetic ratings of the MovieLens-32M shape "
        "and print one JSON report. The bench starts its own redis-server on a free 127.0.0.1 "
        "port and works in a temporary directory. The default size (32M) runs for 4 to 8 "
        "minutes on 2 cores; --size 1M takes about a minute.",
    )
    bench.add_argument("--size", default="32M", help="ratings to generate: 1M, 10M, 32M (default) ...")
    bench.add_argument("--keep-data", type=Path, default=None, metavar="DIR",
                       help="leave the generated ratings and genres as Parquet in DIR")
    bench.add_argument(
        "--ingest-events", type=int, default=2_000_000,
        help="events of the ingest stage (default 2,000,000: at 32M ratings the run then includes "
             "one merge of the consumer's in-memory rating index)",
    )
    bench.add_argument("--output", type=Path, default=None, help="also write the JSON to this file")
    bench.add_argument("--stages", type=parse_stages, default=STAGES, metavar="LIST",
                       help=f"comma-separated stages to run, of {','.join(STAGES)} (default: all); "
                            "freshness and query also run the retrain, whose snapshot they serve")
    bench.add_argument("--keep-work", action="store_true",
                       help="keep the scratch directory (database, snapshots, process logs)")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    n_ratings = data.parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="streamrec-bench-"))
    try:
        core_check = {"start": core_check_seconds()}
        report = bench(n_ratings, work, args.keep_data, args.ingest_events, args.stages)
        core_check["end"] = core_check_seconds()
        report["machine"]["core_check_seconds"] = core_check
    finally:
        if args.keep_work:
            log.info("scratch directory kept path=%s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    return 0


def bench(
    n_ratings: int, work: Path, keep_data: Path | None, ingest_events: int, stages: tuple[str, ...] = STAGES
) -> dict:
    """Run the chosen stages at n_ratings in the scratch directory `work`; return the report."""
    report: dict = {"machine": machine()}

    started = time.perf_counter()
    synthetic = data.generate(n_ratings)
    report["data"] = {
        "ratings": synthetic.n_ratings, "users": synthetic.n_users, "items": synthetic.n_items,
        "genres": synthetic.n_genres, "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("data generated ratings=%d seconds=%.1f", synthetic.n_ratings, report["data"]["seconds"])
    if keep_data is not None:
        data.write_parquet(synthetic, keep_data)

    if "als" in stages:
        arrays_dir = work / "arrays"
        als_stage.save_arrays(synthetic, arrays_dir)
        report["als"] = []
        for factors in (32, 64):
            for use_genres in (True, False):
                result = als_stage.time_epochs(arrays_dir, factors, use_genres, TIMED_EPOCHS)
                log.info("als timed %s", result)
                report["als"].append(result)
        report["scaling"] = scaling(report["als"][0], arrays_dir, n_ratings, work)
        shutil.rmtree(arrays_dir, ignore_errors=True)

    data_dir = work / "data"
    if {"retrain", "freshness", "query"} & set(stages):
        fill_seconds = store_stage.fill_database(synthetic, Settings(data_dir=data_dir).database_path)
        load = store_stage.time_load(Settings(data_dir=data_dir).database_path)
        report["load"] = {**load, "fill_seconds": round(fill_seconds, 2)}
        report["retrain"] = store_stage.time_retrain(data_dir, 32)
        log.info("retrain timed %s", report["retrain"])
    n_users, n_items = synthetic.n_users, synthetic.n_items
    del synthetic

    if not {"retrain", "ingest", "freshness", "query"} & set(stages):
        return report
    logs = work / "logs"
    logs.mkdir()
    with redis_server(work / "redis") as redis_url:
        if "retrain" in report:
            report["retrain"].update(store_stage.time_lists(data_dir, redis_url, report["retrain"]["version"]))
            log.info("lists timed %s", report["retrain"])
        if "ingest" in stages:
            # Into the full database when there is one, which is what a deployment runs against;
            # into an empty one otherwise.
            filled = bool({"retrain", "freshness", "query"} & set(stages))
            report["ingest"] = flow_stage.time_ingest(
                data_dir if filled else work / "ingest", redis_url, ingest_events, n_users, n_items,
                logs / "ingest.log",
            )
            report["ingest"]["database_ratings"] = n_ratings if filled else 0
            log.info("ingest timed %s", report["ingest"])
        if "freshness" in stages:
            report["freshness"] = flow_stage.time_freshness(
                data_dir, redis_url, FRESHNESS_RATE, FRESHNESS_SECONDS, n_users, n_items, logs
            )
            log.info("freshness timed %s", report["freshness"])
        if "query" in stages:
            report["query"] = flow_stage.time_queries(data_dir, redis_url, n_users, n_items, QUERY_CALLS)
    return report


def scaling_epochs(count: int, n_ratings: int) -> int:
    """Return the epochs to time at `count` ratings: as many as cover the ratings of TIMED_EPOCHS
    epochs at n_ratings, at most MAX_SCALING_EPOCHS.

    Five epochs at 1M ratings last about 0.2 s, so a burst of other load on a shared machine
    moved the ratio by 10 to 20% in either direction.
    """
    return max(TIMED_EPOCHS, min(MAX_SCALING_EPOCHS, TIMED_EPOCHS * n_ratings // max(count, 1)))


def scaling(full: dict, arrays_dir: Path, n_ratings: int, work: Path) -> dict:
    """Return the seconds per epoch (K=32, genres) per million ratings at smaller sizes and at
    n_ratings, and the cost per rating relative to the smallest size.

    The sizes are timed in SCALING_ROUNDS rounds. Each figure is the median over the rounds, and
    each ratio the median of the rounds' ratios. A ratio near 1 means the cost per rating stays
    flat as the data grows. Without a smaller size, the ALS section's figure `full` is used.
    """
    directories = {n_ratings: arrays_dir}
    for size in SCALING_SIZES:
        count = data.parse_size(size)
        if count < n_ratings:
            directories[count] = work / f"arrays-{size}"
            als_stage.save_arrays(data.generate(count), directories[count])
    if len(directories) == 1:
        per_million = {str(n_ratings): full["seconds_per_epoch"] / n_ratings * 1e6}
        return {
            "seconds_per_million_ratings": {size: round(value, 4) for size, value in per_million.items()},
            "ratio_to_smallest": {size: 1.0 for size in per_million},
            "ratio_by_round": [],
        }

    counts = sorted(directories)
    rounds: list[dict[int, float]] = []
    for index in range(SCALING_ROUNDS):
        per_million = {}
        for count in counts:
            result = als_stage.time_epochs(directories[count], 32, True, scaling_epochs(count, n_ratings))
            per_million[count] = result["seconds_per_epoch"] / count * 1e6
        log.info(
            "scaling round %d of %d: seconds per epoch per million ratings %s",
            index + 1, SCALING_ROUNDS, {count: round(value, 4) for count, value in per_million.items()},
        )
        rounds.append(per_million)
    for count in counts[:-1]:
        shutil.rmtree(directories[count], ignore_errors=True)

    smallest = counts[0]
    ratio_by_round = [{str(count): round(values[count] / values[smallest], 3) for count in counts} for values in rounds]
    return {
        "seconds_per_million_ratings": {
            str(count): round(statistics.median(values[count] for values in rounds), 4) for count in counts
        },
        "ratio_to_smallest": {
            str(count): round(statistics.median(ratios[str(count)] for ratios in ratio_by_round), 2)
            for count in counts
        },
        "ratio_by_round": ratio_by_round,
    }
