"""`streamrec demo`: the whole path on MovieLens, from a pushed rating to a changed recommendation.

Without REDIS_URL everything runs in this process on fakeredis, and refresh jobs run inline.
With REDIS_URL the ingest consumer, a refresh worker and a retrain worker run as separate
processes, as in production.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np

import als
from api.recommender import Recommender
from cli.connect import connect_redis, embedded_redis
from cli.demo_cluster import EmbeddedCluster, ProcessCluster
from cli.query_commands import print_items
from store.movielens import read_ratings_file
from store.settings import Settings

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent.parent / "data"
TRAIN_FILE = DATA / "splits" / "ml-latest-small.temporal80.train.csv"
STREAM_FILE = DATA / "splits" / "ml-latest-small.temporal80.test.csv"
MOVIES_FILE = DATA / "ml-latest-small" / "movies.csv"
TOY_STORY = "1"
# Events pushed per client call while streaming; the consumer reads them in its own batches.
PUSH_CHUNK = 2000


def add_parsers(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole system on MovieLens ml-latest-small and show what changes",
        description="Loads the earliest 80% of ml-latest-small, trains version 1, streams the "
        "latest 20% as events, and retrains version 2. Uses REDIS_URL when set (and deletes the "
        "streamrec keys there first), else an in-process fakeredis. Data goes to DATA_DIR/demo, "
        "which is emptied first.",
    )
    parser.set_defaults(handler=run_demo)


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def pick_demo_user(train_users: np.ndarray, stream_users: np.ndarray) -> str:
    """Return the user with the most streamed ratings among those with 20+ training ratings."""
    train_ids, train_counts = np.unique(train_users, return_counts=True)
    established = set(train_ids[train_counts >= 20])
    stream_ids, stream_counts = np.unique(stream_users, return_counts=True)
    for index in np.argsort(-stream_counts, kind="stable"):
        if stream_ids[index] in established:
            return str(stream_ids[index])
    return str(stream_ids[np.argmax(stream_counts)])


def streamed_rmse(recommender: Recommender, stream) -> float:
    predictions = recommender.predict_many(stream.user_ids.astype(str), stream.item_ids.astype(str))
    return als.rmse(predictions, stream.rating.astype(np.float64))


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    demo_dir = settings.data_dir / "demo"
    if demo_dir.exists():
        shutil.rmtree(demo_dir)
    demo_dir.mkdir(parents=True)
    settings = settings.model_copy(update={"data_dir": demo_dir})

    if settings.redis_url:
        connection = connect_redis(settings)
        cluster = ProcessCluster(settings, connection)
        print(f"Redis: {settings.redis_url} (the ingest consumer and two workers run as separate processes)")
    else:
        connection = embedded_redis()
        cluster = EmbeddedCluster(settings, connection)
        print("Redis: none configured, using an in-process fakeredis (set REDIS_URL for a real one)")

    with cluster:
        heading("1. Load the earliest 80% of ml-latest-small and train version 1")
        counts = cluster.load(TRAIN_FILE, MOVIES_FILE)
        print(f"loaded {counts.ratings:,} ratings by {counts.users:,} users of {counts.items:,} movies")
        result = cluster.retrain_now()
        print(f"published version {result['version']}: train RMSE {result['train_rmse']:.4f}, "
              f"{result['train_seconds']:.1f} s training")

        stream = read_ratings_file(STREAM_FILE)
        order = np.argsort(stream.timestamp, kind="stable")
        train_file = read_ratings_file(TRAIN_FILE)
        user_id = pick_demo_user(train_file.user_ids.astype(str), stream.user_ids.astype(str))
        recommender = Recommender(settings, connection)
        v1_rmse = streamed_rmse(recommender, stream)

        heading(f"2. User {user_id}: recommendations from version 1")
        before = recommender.recommend(user_id, n=10)
        print_items(before, as_json=False)
        print(
            "  score orders the lists: the predicted rating minus the mean rating, plus a bonus "
            "for items with many ratings; it is not a number of stars"
        )

        heading(f"3. Stream the latest 20% ({len(order):,} ratings) as events, in time order")
        cluster.start_processes()
        stream_started = time.perf_counter()
        for start in range(0, len(order), PUSH_CHUNK):
            rows = order[start:start + PUSH_CHUNK]
            cluster.push(stream, rows)
        cluster.wait_until_idle()
        seconds = time.perf_counter() - stream_started
        print(f"ingested and refreshed {len(order):,} events in {seconds:.1f} s; "
              f"dead-lettered: {cluster.dead_letters()}")

        mine = stream.user_ids.astype(str) == user_id
        print(f"\nUser {user_id} rated {int(mine.sum())} more movies during the stream; now:")
        after = recommender.recommend(user_id, n=10)
        print_items(after, as_json=False)
        changed = len({r.item_id for r in after} - {r.item_id for r in before})
        print(f"{changed} of 10 recommendations changed (list read from Redis "
              f"key streamrec:recs:{user_id}: {cluster.redis_list_length(user_id)} items)")

        heading("4. A new visitor who gives Toy Story (1995) five stars and nothing else")
        visitor = recommender.recommend_for_ratings({TOY_STORY: 5.0}, n=10)
        print_items(visitor, as_json=False)
        family = sum(1 for r in visitor if {"Children", "Animation"} & set(r.genres))
        anonymous = recommender.recommend_for_ratings({}, n=10)
        baseline = sum(1 for r in anonymous if {"Children", "Animation"} & set(r.genres))
        print(f"{family} of 10 carry the Children or Animation genre "
              f"({baseline} of 10 in the list for a visitor with no ratings)")

        heading("5. An operator retrain publishes version 2")
        result = cluster.operator_retrain()
        print(f"published version {result['version']}: {result['ratings']:,} ratings, "
              f"train RMSE {result['train_rmse']:.4f}, {result['train_seconds']:.1f} s training")
        v2_rmse = streamed_rmse(recommender, stream)

        heading("6. RMSE on the streamed ratings")
        print(f"version 1 (trained before the stream, predicts them cold): {v1_rmse:.4f}")
        print(f"version 2 (trained on them too, so this is its fit):      {v2_rmse:.4f}")

    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s; data in {demo_dir}")
    return 0
