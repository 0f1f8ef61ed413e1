"""Batch writes decided by a RatingIndex, so that the database only appends rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from store.rating_index import NOT_STORED, RatingIndex, pair_key


def newest_per_pair(users: np.ndarray, items: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return the positions of one event per (user, item): the newest, and of equal times the later.

    The positions come back in batch order.
    """
    keys = pair_key(users, items)
    order = np.lexsort((np.arange(keys.shape[0]), times, keys))
    last_of_key = np.r_[keys[order][1:] != keys[order][:-1], True]
    return np.sort(order[last_of_key])


def write_batch(
    con: duckdb.DuckDBPyConnection,
    index: RatingIndex,
    user_ids: Sequence[str],
    item_ids: Sequence[str],
    ratings: np.ndarray,
    timestamps: np.ndarray,
    seq: int,
) -> BatchWrite:
    """Append a batch's new users, items, pairs and changes; call inside the batch's transaction.

    The index learns the batch only from BatchWrite.commit, called after the transaction, so a
    failed commit leaves it as it was.
    """
    # Ids are strings in the database, so an integer id names the same user as its decimal text.
    batch_users, new_users = index.user_indices([str(user_id) for user_id in user_ids])
    items, new_items = index.item_indices([str(item_id) for item_id in item_ids])
    keep = newest_per_pair(batch_users, items, timestamps)
    users, items = batch_users[keep], items[keep]
    stars = np.asarray(ratings, dtype=np.float32)[keep]
    times = np.asarray(timestamps, dtype=np.int64)[keep]
    where, wins = index.decide(users, items, times)

    # New ids take the next dense indices; items start without a title or genres.
    for table, prefix, first, new_ids, extra_columns in (
        ("users", "user", index.n_users, new_users, ""),
        ("items", "item", index.n_items, new_items, ", NULL, []::VARCHAR[]"),
    ):
        if new_ids:
            columns = {
                f"{prefix}_idx": np.arange(first, first + len(new_ids), dtype=np.int32),
                f"{prefix}_id": np.array(new_ids, dtype=object),
            }
            _insert(con, table, columns, f"{prefix}_idx, {prefix}_id{extra_columns}")

    rows = {"user_idx": users, "item_idx": items, "rating": stars, "timestamp": times,
            "updated_seq": np.full(users.shape[0], seq, dtype=np.int64)}
    added = wins & (where == NOT_STORED)
    changed = wins & (where != NOT_STORED)
    columns = "user_idx, item_idx, rating, timestamp, updated_seq"
    if added.any():
        _insert(con, "ratings", {name: column[added] for name, column in rows.items()}, columns)
    if changed.any():
        _insert(con, "rating_changes", {name: column[changed] for name, column in rows.items()}, columns)

    written_users = users[wins]
    touched: list[str] = []
    ordered = np.zeros(0, np.int32)
    if written_users.shape[0]:
        # Users are listed in the order of their first event in the batch.
        unique, first_position = np.unique(batch_users, return_index=True)
        chosen = np.isin(unique, written_users)
        ordered = unique[chosen][np.argsort(first_position[chosen], kind="stable")]
        known = index.n_users
        touched = [
            index.user_ids[user] if user < known else new_users[user - known]
            for user in ordered.tolist()
        ]

    return BatchWrite(
        touched=touched, touched_idx=ordered, new_users=new_users, new_items=new_items,
        where=where[wins],
        users=users[wins], items=items[wins], stars=stars[wins], times=times[wins], seq=seq,
    )


@dataclass(frozen=True)
class BatchWrite:
    """A batch written to the database, and what the index must learn once it has committed."""

    touched: list[str]  # users with a rating written, in order of first appearance
    touched_idx: np.ndarray  # their user_idx, int32
    new_users: list[str]
    new_items: list[str]
    where: np.ndarray  # per rating written: its location in the index, or NOT_STORED
    users: np.ndarray
    items: np.ndarray
    stars: np.ndarray
    times: np.ndarray
    seq: int  # the batch, which the index records as each written rating's seq

    @property
    def written(self) -> int:
        return int(self.where.shape[0])

    @property
    def changed(self) -> int:
        """Ratings written to rating_changes, replacing a stored rating."""
        return int(np.count_nonzero(self.where != NOT_STORED))

    def commit(self, index: RatingIndex) -> None:
        index.add_ids(self.new_users, self.new_items)
        index.store(self.where, self.users, self.items, self.stars, self.times, self.seq)


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: dict, select: str) -> None:
    con.register("batch_rows", columns)
    try:
        con.execute(f"INSERT INTO {table} SELECT {select} FROM batch_rows")
    finally:
        con.unregister("batch_rows")
