"""The database stages: fill a DuckDB file with the synthetic ratings, read it back, retrain,
and write every user's list of the retrained version."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import redis

import als
from cli.bench.data import SyntheticData
from store.database import Database
from store.settings import Settings
from worker.retrain import finish_publication, run_retrain

# Epochs of the timed full retrain.
RETRAIN_EPOCHS = 10


def fill_database(data: SyntheticData, path: Path) -> float:
    """Write users, items with genres, and ratings into a new streamrec database; return seconds.

    External ids are the dense indices as text, genres are named "genre-00" and so on, and every
    rating gets timestamp 0 and updated_seq 0, as a bulk load would.
    """
    started = time.perf_counter()
    genre_names = np.array([f"genre-{k:02d}" for k in range(data.n_genres)], dtype=object)
    items_genres = [
        list(genre_names[data.genre_indices[data.genre_indptr[n]:data.genre_indptr[n + 1]]])
        for n in range(data.n_items)
    ]
    with Database(path) as database:
        con = database.connection
        con.register("bench_users", {"user_idx": np.arange(data.n_users, dtype=np.int32)})
        con.execute("INSERT INTO users SELECT user_idx, user_idx::VARCHAR FROM bench_users")
        con.register("bench_items", {"item_idx": np.arange(data.n_items, dtype=np.int32)})
        con.execute(
            "INSERT INTO items SELECT item_idx, item_idx::VARCHAR, 'item ' || item_idx, NULL FROM bench_items"
        )
        con.execute("CREATE TEMP TABLE bench_genres (item_idx INTEGER, genres VARCHAR[])")
        con.executemany(
            "INSERT INTO bench_genres VALUES (?, ?)", list(enumerate(items_genres))
        )
        con.execute("UPDATE items SET genres = g.genres FROM bench_genres g WHERE items.item_idx = g.item_idx")
        con.register("bench_ratings", {
            "user_idx": data.user_idx, "item_idx": data.item_idx, "rating": data.rating,
        })
        con.execute("INSERT INTO ratings SELECT user_idx, item_idx, rating, 0, 0 FROM bench_ratings")
    return time.perf_counter() - started


def time_load(path: Path) -> dict:
    """Read every rating and the id and genre tables from the database into numpy arrays."""
    started = time.perf_counter()
    with Database(path, read_only=True) as database:
        data = database.ratings_arrays()
    seconds = time.perf_counter() - started
    return {"ratings": int(data.rating.shape[0]), "seconds": round(seconds, 3)}


def time_retrain(data_dir: Path, factors: int) -> dict:
    """Run a full retrain from the database to a published snapshot, without Redis."""
    settings = Settings(data_dir=data_dir)
    config = als.ALSConfig(factors=factors, epochs=RETRAIN_EPOCHS)
    started = time.perf_counter()
    result = run_retrain(settings, None, config)
    seconds = time.perf_counter() - started
    return {
        "ratings": result["ratings"],
        "factors": factors,
        "epochs": RETRAIN_EPOCHS,
        "seconds": round(seconds, 2),
        "read_seconds": round(result["read_seconds"], 2),
        "train_seconds": round(result["train_seconds"], 2),
        "publish_seconds": round(result["publish_seconds"], 2),
        "version": result["version"],
    }


def time_lists(data_dir: Path, redis_url: str, version: int) -> dict:
    """Publish `version` to Redis as a retrain worker does, writing every user's list; time it.

    The server is emptied afterwards, so the stages after this one start from the same state as
    when this stage does not run: no lists and no refold request for a consumer to act on.
    """
    settings = Settings(data_dir=data_dir, redis_url=redis_url)
    connection = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    written = finish_publication(settings, connection, version)
    seconds = time.perf_counter() - started
    connection.flushdb()
    return {"lists_written": written, "lists_seconds": round(seconds, 2)}
