"""The DuckDB database of users, items and ratings: schema, batch upserts and bulk reads.

Only one process may open the file for writing, and while it does no other process may open it
at all. While the ingest consumer runs it is that process, so other processes ask it for exports
instead of opening the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple, Protocol

import duckdb
import numpy as np

from store.changes import current_ratings_sql, drop_ratings_primary_key, fold_changes
from store.errors import DatabaseLockedError, DataFileError
from store.indexed_batch import write_batch
from store.keys import EVENTS_STREAM
from store.rating_index import RatingIndex, warm_up
from store.ratings_data import RatingsData, genre_csr, unicode_array
from store.user_rows import UserRows

log = logging.getLogger(__name__)

SCHEMA_SQL = resources.files("store").joinpath("schema.sql").read_text(encoding="utf-8")

# Pending rating changes are folded into the ratings table once a batch leaves this many. A fold
# costs nearly the same for 50,000 changes as for 500,000 (2.2 s and 2.5 s on a 32M-rating
# table, one UPDATE joined over the whole table), so fewer, larger folds cost ingest less.
FOLD_CHANGES_AT = 500_000


class RatingRecord(Protocol):
    """Fields apply_ratings reads from each event; ingest.events.RatingEvent has them."""

    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def rating(self) -> float: ...
    @property
    def timestamp(self) -> int | None: ...


@dataclass(frozen=True)
class AppliedBatch:
    """Outcome of one apply_ratings call."""

    seq: int  # batch number written to updated_seq of every row this batch changed
    user_ids: list[str]  # users whose stored ratings changed, in order of first appearance
    received: int  # events passed in
    written: int  # ratings inserted or replaced
    stale: int  # events that lost to a stored rating or to a newer one in the same batch
    new_users: int
    new_items: int


class Counts(NamedTuple):
    """Row counts of the main tables."""

    users: int
    items: int
    ratings: int


class Database:
    """A connection to the streamrec DuckDB file; use as a context manager.

    Opening for writing creates the schema when missing. Raises DatabaseLockedError when another
    process holds the file, and FileNotFoundError for a read-only open of a missing file.

    With `keep_index`, the ratings are also kept in memory (store.rating_index), which makes
    apply_rating_columns and user_ratings independent of the table's size. The ingest consumer
    opens the database this way, and then writes only through apply_rating_columns.
    """

    def __init__(self, path: str | Path, read_only: bool = False, keep_index: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        in_memory = self.path == ":memory:"
        if read_only and not in_memory and not Path(self.path).exists():
            raise FileNotFoundError(
                f"database not found: {self.path}; load ratings first (streamrec load-movielens)"
            )
        if not read_only and not in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)

        try:
            self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise DatabaseLockedError(
                    f"database is locked: {self.path}; another process holds it: the ingest "
                    "consumer (streamrec ingest), or a retrain that reads the file while no "
                    "consumer runs, for a few seconds. Stop the consumer, or wait for the "
                    "retrain's read, and run this command again."
                ) from exc
            raise
        self._transaction_depth = 0
        self._index: RatingIndex | None = None
        # The seq of the last batch this process committed with the index kept, so a batch
        # needs no query for it. Only the owner of the file keeps the index.
        self._committed_seq: int | None = None
        self._last_touched: tuple[list[str], np.ndarray] = ([], np.zeros(0, np.int32))
        self._keep_after: int | None = None
        self._pending_changes = 0
        if not read_only:
            self._con.execute(SCHEMA_SQL)
            with self.transaction():
                drop_ratings_primary_key(self._con)
                if not self._con.execute("SELECT count(*) FROM ratings_generation").fetchall()[0][0]:
                    self._con.execute("INSERT INTO ratings_generation VALUES ($1)", [uuid.uuid4().hex])
        if keep_index:
            self.keep_index()

    def keep_index(self) -> None:
        """Load the ratings into memory (store.rating_index) and keep them current from now on.

        Raises ValueError on a read-only database.
        """
        if self.read_only:
            raise ValueError("keep_index: needs a database opened for writing")
        log.info("rating index kernels ready seconds=%.1f", warm_up())
        started = time.perf_counter()
        log.info("rating index loading path=%s ratings=%d", self.path, self.counts().ratings)
        with self.transaction():
            fold_changes(self._con)
            users = self._con.execute("SELECT user_id FROM users ORDER BY user_idx").fetchnumpy()["user_id"]
            items = self._con.execute("SELECT item_id FROM items ORDER BY item_idx").fetchnumpy()["item_id"]
            # Unordered: the index groups the rows itself, in linear time.
            rows = self._con.execute(
                "SELECT user_idx, item_idx, rating, timestamp, updated_seq FROM ratings"
            ).fetchnumpy()
        index = RatingIndex.from_columns(
            [str(user_id) for user_id in users], [str(item_id) for item_id in items],
            rows["user_idx"], rows["item_idx"], rows["rating"], rows["timestamp"], rows["updated_seq"],
        )
        log.info("rating index loaded ratings=%d users=%d items=%d seconds=%.1f",
                 index.n_ratings, index.n_users, index.n_items, time.perf_counter() - started)
        index.keep_after = self._keep_after
        self._index = index
        self._pending_changes = 0

    def keep_recent_after(self, seq: int | None) -> None:
        """Keep ratings written after batch `seq` out of the rating index's merges while they are
        most of its recent additions, so user_rows(since_seq=seq) stays cheap. None allows every
        merge. Does nothing without the index."""
        self._keep_after = seq
        if self._index is not None:
            self._index.keep_after = seq

    @property
    def keeps_index(self) -> bool:
        """Whether the ratings are also kept in memory; see keep_index."""
        return self._index is not None

    # -- connection lifetime -------------------------------------------------------------------

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection. With the rating index kept, fold pending changes first, so that
        an earlier release, which does not know rating_changes, reads current values."""
        if self._index is not None:
            try:
                self.fold_changes()
            except duckdb.Error:
                log.warning("rating changes not folded at close; the next consumer folds them",
                            exc_info=True)
        self._con.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The raw DuckDB connection, for other modules of the store package."""
        return self._con

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction; nested uses join the outer one."""
        if self._transaction_depth > 0:
            self._transaction_depth += 1
            try:
                yield
            finally:
                self._transaction_depth -= 1
            return

        self._con.execute("BEGIN TRANSACTION")
        self._transaction_depth = 1
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        else:
            self._con.execute("COMMIT")
        finally:
            self._transaction_depth = 0

    # -- writes --------------------------------------------------------------------------------

    def apply_ratings(
        self,
        events: Sequence[RatingRecord],
        *,
        stream: str = EVENTS_STREAM,
        last_stream_id: str | None = None,
    ) -> AppliedBatch:
        """Upsert a batch of rating events in one transaction, as batch number current seq + 1.

        Events are in stream order and must carry a timestamp. New external ids get the next
        dense indices. The batch number and `last_stream_id` are stored as the progress of
        `stream` in the same transaction, so progress never runs ahead of the data.
        An empty batch writes nothing and returns the current seq.
        """
        if not events:
            return AppliedBatch(self.current_seq(), [], 0, 0, 0, 0, 0)
        return self.apply_rating_columns(
            [str(event.user_id) for event in events],
            [str(event.item_id) for event in events],
            np.array([event.rating for event in events], dtype=np.float32),
            np.array([_required_timestamp(event) for event in events], dtype=np.int64),
            stream=stream,
            last_stream_id=last_stream_id,
        )

    def apply_rating_columns(
        self,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        ratings: np.ndarray,
        timestamps: np.ndarray,
        *,
        stream: str = EVENTS_STREAM,
        last_stream_id: str | None = None,
    ) -> AppliedBatch:
        """Upsert a batch given as columns (one entry per event, in stream order); see apply_ratings.

        ratings are stars and timestamps seconds since the epoch. The columns must have equal
        lengths; raises ValueError naming them otherwise.
        """
        count = len(user_ids)
        if not (len(item_ids) == len(ratings) == len(timestamps) == count):
            raise ValueError(
                f"user_ids, item_ids, ratings, timestamps: must have equal lengths, got "
                f"{count}, {len(item_ids)}, {len(ratings)}, {len(timestamps)}"
            )
        if count == 0:
            return AppliedBatch(self.current_seq(), [], 0, 0, 0, 0, 0)
        if self._index is not None:
            return self._apply_indexed(
                user_ids, item_ids, ratings, timestamps, stream=stream, last_stream_id=last_stream_id
            )
        incoming = {
            "pos": np.arange(count, dtype=np.int64),
            "user_id": np.array(user_ids, dtype=object),
            "item_id": np.array(item_ids, dtype=object),
            "rating": np.asarray(ratings, dtype=np.float32),
            "timestamp": np.asarray(timestamps, dtype=np.int64),
        }

        self._con.register("incoming_events", incoming)
        try:
            with self.transaction():
                seq = self.current_seq() + 1
                batch = self.merge_ratings(
                    "SELECT pos, user_id, item_id, rating, timestamp FROM incoming_events", seq
                )
                self._record_progress(stream, last_stream_id, seq)
        finally:
            self._con.unregister("incoming_events")
        return batch

    def _apply_indexed(
        self, user_ids: Sequence[str], item_ids: Sequence[str], ratings: np.ndarray,
        timestamps: np.ndarray, *, stream: str, last_stream_id: str | None,
    ) -> AppliedBatch:
        assert self._index is not None
        if self._transaction_depth:
            # The index takes the batch once it commits, and a caller's rollback could not undo that.
            raise ValueError(
                "apply_rating_columns: with the rating index kept, call it outside transaction()"
            )
        with self.transaction():
            seq = self.current_seq() + 1
            write = write_batch(self._con, self._index, user_ids, item_ids, ratings, timestamps, seq)
            self._record_progress(stream, last_stream_id, seq)
        # Committed, and this process owns the file, so no other writer moves the seq.
        self._committed_seq = seq
        # The consumer reads these users' ratings next; their indices are known already.
        self._last_touched = (write.touched, write.touched_idx)
        try:
            write.commit(self._index)
        except Exception:
            # An index that missed committed rows would append duplicates later: rebuild it.
            log.error("rating index update failed, reloading it from the database seq=%d", seq,
                      exc_info=True)
            self.keep_index()
        self._pending_changes += write.changed
        if self._pending_changes >= FOLD_CHANGES_AT:
            with self.transaction():
                fold_changes(self._con)
            self._pending_changes = 0
        return AppliedBatch(
            seq=seq, user_ids=write.touched, received=len(user_ids), written=write.written,
            stale=len(user_ids) - write.written, new_users=len(write.new_users),
            new_items=len(write.new_items),
        )

    def _record_progress(self, stream: str, last_stream_id: str | None, seq: int) -> None:
        # An UPDATE of the existing row cost 1.3 ms against 3.1 ms for the upsert (1M database).
        updated = self._con.execute(
            "UPDATE ingest_progress SET last_stream_id = coalesce($2, last_stream_id), seq = $3 "
            "WHERE stream = $1",
            [stream, last_stream_id, seq],
        ).fetchall()
        if updated and updated[0][0]:
            return
        self._con.execute(
            """
            INSERT INTO ingest_progress (stream, last_stream_id, seq) VALUES ($1, $2, $3)
            ON CONFLICT (stream) DO UPDATE SET
                last_stream_id = coalesce(excluded.last_stream_id, ingest_progress.last_stream_id),
                seq = excluded.seq
            """,
            [stream, last_stream_id, seq],
        )

    def forget_stream_position(self, stream: str) -> None:
        """Clear the last committed stream id of `stream`, keeping its batch seq.

        The ingest consumer calls this before it creates its consumer group again, because the
        ids of a stream created again can lie below the old committed id.
        """
        self._con.execute(
            "UPDATE ingest_progress SET last_stream_id = NULL WHERE stream = $1", [stream]
        )

    def merge_ratings(self, select_sql: str, seq: int) -> AppliedBatch:
        """Upsert the ratings a query returns, writing `seq` into updated_seq of changed rows.

        The query returns columns (pos, user_id, item_id, rating, timestamp); pos orders rows
        that share a user, item and timestamp (the later one wins). A rating replaces the stored
        one only when its timestamp is newer, or equal with a higher seq, so replaying a batch
        changes nothing. Call inside a transaction. Bulk loads pass seq 0, which also gives the
        ratings a new generation (see ratings_generation). Not available while the rating index is
        kept, which would miss the rows.
        """
        self._reject_with_index("merge_ratings")
        con = self._con
        if seq == 0:
            con.execute("UPDATE ratings_generation SET id = $1", [uuid.uuid4().hex])
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE staged_ratings AS
            SELECT pos, user_id::VARCHAR AS user_id, item_id::VARCHAR AS item_id,
                   rating::REAL AS rating, timestamp::BIGINT AS timestamp
            FROM ({select_sql})
            """
        )
        received = con.execute("SELECT count(*) FROM staged_ratings").fetchall()[0][0]

        # Dense indices for unseen ids, in order of first appearance in the batch.
        new_users = con.execute(
            """
            INSERT INTO users (user_idx, user_id)
            SELECT (SELECT coalesce(max(user_idx), -1) FROM users)
                       + row_number() OVER (ORDER BY first_pos),
                   user_id
            FROM (SELECT user_id, min(pos) AS first_pos FROM staged_ratings
                  WHERE user_id NOT IN (SELECT user_id FROM users) GROUP BY user_id)
            """
        ).fetchall()[0][0]
        new_items = con.execute(
            """
            INSERT INTO items (item_idx, item_id, title, genres)
            SELECT (SELECT coalesce(max(item_idx), -1) FROM items)
                       + row_number() OVER (ORDER BY first_pos),
                   item_id, NULL, []::VARCHAR[]
            FROM (SELECT item_id, min(pos) AS first_pos FROM staged_ratings
                  WHERE item_id NOT IN (SELECT item_id FROM items) GROUP BY item_id)
            """
        ).fetchall()[0][0]

        # One candidate per (user, item): the newest timestamp, then the later position. A stored
        # pair takes it when it is newer, or equally new from a later batch. RETURNING lists the
        # users of the rows updated and then of the rows inserted.
        fold_changes(con)
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE candidate_ratings AS
            SELECT u.user_idx, i.item_idx, c.rating, c.timestamp
            FROM (SELECT * FROM staged_ratings
                  QUALIFY row_number() OVER (PARTITION BY user_id, item_id
                                             ORDER BY timestamp DESC, pos DESC) = 1) AS c
            JOIN users u ON u.user_id = c.user_id
            JOIN items i ON i.item_id = c.item_id
            """
        )
        updated = con.execute(
            """
            UPDATE ratings SET rating = c.rating, timestamp = c.timestamp, updated_seq = $1
            FROM candidate_ratings c
            WHERE ratings.user_idx = c.user_idx AND ratings.item_idx = c.item_idx
              AND (c.timestamp > ratings.timestamp
                   OR (c.timestamp = ratings.timestamp AND $1 > ratings.updated_seq))
            RETURNING ratings.user_idx
            """,
            [seq],
        ).fetchnumpy()["user_idx"]
        inserted = con.execute(
            """
            INSERT INTO ratings (user_idx, item_idx, rating, timestamp, updated_seq)
            SELECT c.user_idx, c.item_idx, c.rating, c.timestamp, $1
            FROM candidate_ratings c ANTI JOIN ratings r USING (user_idx, item_idx)
            RETURNING user_idx
            """,
            [seq],
        ).fetchnumpy()["user_idx"]
        con.execute("DROP TABLE candidate_ratings")
        changed = np.concatenate([np.asarray(updated), np.asarray(inserted)])

        written = int(changed.shape[0])
        touched: list[str] = []
        if written:
            con.register("changed_users", {"user_idx": np.unique(changed)})
            try:
                touched = con.execute(
                    """
                    SELECT s.user_id FROM staged_ratings s
                    JOIN users u ON u.user_id = s.user_id
                    WHERE u.user_idx IN (SELECT user_idx FROM changed_users)
                    GROUP BY s.user_id ORDER BY min(s.pos)
                    """
                ).fetchnumpy()["user_id"].tolist()
            finally:
                con.unregister("changed_users")
        con.execute("DROP TABLE staged_ratings")

        return AppliedBatch(
            seq=seq,
            user_ids=[str(user_id) for user_id in touched],
            received=int(received),
            written=int(written),
            stale=int(received - written),
            new_users=int(new_users),
            new_items=int(new_items),
        )

    def merge_items(self, select_sql: str) -> tuple[int, int]:
        """Insert or update items from a query; return (new items, updated items).

        The query returns columns (pos, item_id, title, genres VARCHAR[]); for an item id listed
        twice the later position wins. Existing items keep their index and get the new title and
        genres. Call inside a transaction. Not available while the rating index is kept.
        """
        self._reject_with_index("merge_items")
        con = self._con
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE staged_items AS
            SELECT pos, item_id::VARCHAR AS item_id, title::VARCHAR AS title, genres::VARCHAR[] AS genres
            FROM ({select_sql})
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY pos DESC) = 1
            """
        )
        updated = con.execute(
            """
            UPDATE items SET title = s.title, genres = s.genres
            FROM staged_items s WHERE items.item_id = s.item_id
            """
        ).fetchall()[0][0]
        inserted = con.execute(
            """
            INSERT INTO items (item_idx, item_id, title, genres)
            SELECT (SELECT coalesce(max(item_idx), -1) FROM items) + row_number() OVER (ORDER BY pos),
                   item_id, title, genres
            FROM staged_items WHERE item_id NOT IN (SELECT item_id FROM items)
            """
        ).fetchall()[0][0]
        con.execute("DROP TABLE staged_items")
        return int(inserted), int(updated)

    def _reject_with_index(self, operation: str) -> None:
        if self._index is not None:
            raise RuntimeError(
                f"{operation}: not available on a database opened with keep_index; "
                "stop the ingest consumer and run it again"
            )

    def fold_changes(self) -> int:
        """Apply pending rating changes to the ratings table; return the rows folded."""
        with self.transaction():
            folded = fold_changes(self._con)
        self._pending_changes = 0
        return folded

    # -- reads ---------------------------------------------------------------------------------

    def current_seq(self) -> int:
        """Return the number of the last ingest batch committed, 0 before the first."""
        if self._committed_seq is not None:
            return self._committed_seq
        return int(self._con.execute("SELECT coalesce(max(seq), 0) FROM ingest_progress").fetchall()[0][0])

    def ingest_progress(self, stream: str = EVENTS_STREAM) -> tuple[str | None, int] | None:
        """Return (last committed stream id, batch seq) for a stream, or None if never ingested."""
        rows = self._con.execute(
            "SELECT last_stream_id, seq FROM ingest_progress WHERE stream = $1", [stream]
        ).fetchall()
        if not rows:
            return None
        return rows[0][0], int(rows[0][1])

    def counts(self) -> Counts:
        """Count users, items and ratings."""
        row = self._con.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items), (SELECT count(*) FROM ratings)"
        ).fetchall()[0]
        return Counts(int(row[0]), int(row[1]), int(row[2]))

    def user_ratings(self, user_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return each user's complete current ratings as (item ids, float32 ratings).

        Items are ordered by item_idx. Users without any rating are left out of the result.
        """
        return dict(self.user_rows(user_ids).items())

    def user_rows(self, user_ids: Sequence[str], since_seq: int | None = None) -> UserRows:
        """Return the complete current ratings of the named users who have any, in order of
        first mention. With the rating index kept, this needs no query.

        With `since_seq`, rows hold only the ratings written by a batch numbered above it, and
        users without such a rating are left out.
        """
        requested = list(dict.fromkeys(str(user_id) for user_id in user_ids))
        if self._index is not None:
            return self._indexed_user_rows(requested, since_seq)
        newer = "" if since_seq is None else f"WHERE r.updated_seq > {int(since_seq)}"
        self._con.register("requested_users", {"user_id": np.array(requested, dtype=object)})
        try:
            columns = self._con.execute(
                f"""
                SELECT w.pos, r.item_idx, r.rating
                FROM (SELECT user_id, min(pos) AS pos
                      FROM (SELECT user_id, row_number() OVER () AS pos FROM requested_users)
                      GROUP BY user_id) w
                JOIN users u ON u.user_id = w.user_id
                JOIN {current_ratings_sql(self._con)} r ON r.user_idx = u.user_idx
                {newer}
                ORDER BY w.pos, r.item_idx
                """
            ).fetchnumpy()
        finally:
            self._con.unregister("requested_users")
        item_ids = self._con.execute("SELECT item_id FROM items ORDER BY item_idx").fetchnumpy()["item_id"]
        positions = np.asarray(columns["pos"], dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]]) if positions.shape[0] else []
        offsets = np.array(list(starts) + [positions.shape[0]], dtype=np.int64)
        return UserRows(
            [requested[position - 1] for position in positions[offsets[:-1]].tolist()],
            offsets,
            np.asarray(columns["item_idx"], dtype=np.int32),
            np.asarray(columns["rating"], dtype=np.float32),
            unicode_array(item_ids),
            since_seq=since_seq,
        )

    def _indexed_user_rows(self, requested: list[str], since_seq: int | None) -> UserRows:
        assert self._index is not None
        last_ids, last_idx = self._last_touched
        if requested == last_ids:
            indices = last_idx
        else:
            indices, _ = self._index.user_indices(requested)
        known = indices < self._index.n_users
        if since_seq is None:
            offsets, items, stars = self._index.user_rows(indices[known])
        else:
            offsets, items, stars = self._index.user_rows_since(indices[known], since_seq)
        rated = np.diff(offsets) > 0
        names = [user_id for user_id, keep in zip(requested, known.tolist()) if keep]
        if not rated.all():
            names = [user_id for user_id, keep in zip(names, rated.tolist()) if keep]
            offsets = np.r_[0, offsets[1:][rated]]
        return UserRows(names, offsets, items, stars, self._index.item_id_array(),
                        self._index.encoded_item_ids(), since_seq=since_seq)

    def users_updated_since(self, seq: int) -> list[str]:
        """Return the users with a rating written by a batch numbered above `seq`, by user_idx."""
        rows = self._con.execute(
            """
            SELECT user_id FROM users
            WHERE user_idx IN (SELECT user_idx FROM ratings WHERE updated_seq > $1
                               UNION ALL SELECT user_idx FROM rating_changes WHERE updated_seq > $1)
            ORDER BY user_idx
            """,
            [seq],
        ).fetchnumpy()["user_id"]
        return [str(user_id) for user_id in rows]

    def ratings_generation(self) -> str | None:
        """Return the id that each bulk load replaces, or None for a read-only database made by an
        earlier release."""
        return _ratings_generation(self._con)

    def ratings_arrays(self) -> RatingsData:
        """Read every rating and the id, title and genre tables as numpy arrays."""
        if not self.read_only:
            self.fold_changes()
        with self.transaction():
            return _fetch_ratings_data(self._con)

    # -- export --------------------------------------------------------------------------------

    def export_ratings(self, path: str | Path) -> int:
        """Write all ratings to Parquet at `path` and items next to it; return the watermark.

        The ratings file carries both dense indices and external ids, so readers need no
        database. Both files are written under temporary names and renamed into place, items
        first, so a ratings file that exists is complete.
        """
        path = Path(path)
        items_path = export_items_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ratings_tmp = path.with_name(path.name + ".tmp")
        items_tmp = items_path.with_name(items_path.name + ".tmp")

        self.fold_changes()
        with self.transaction():
            watermark = int(
                self._con.execute("SELECT coalesce(max(updated_seq), 0) FROM ratings").fetchall()[0][0]
            )
            self._con.execute(
                f"""
                COPY (SELECT item_idx, item_id, title, genres FROM items ORDER BY item_idx)
                TO {sql_literal(items_tmp)} (FORMAT parquet)
                """
            )
            self._con.execute(
                f"""
                COPY (
                    SELECT r.user_idx, u.user_id, r.item_idx, i.item_id,
                           r.rating, r.timestamp, r.updated_seq
                    FROM ratings r
                    JOIN users u ON u.user_idx = r.user_idx
                    JOIN items i ON i.item_idx = r.item_idx
                    ORDER BY r.user_idx, r.item_idx
                ) TO {sql_literal(ratings_tmp)} (FORMAT parquet)
                """
            )
        os.replace(items_tmp, items_path)
        os.replace(ratings_tmp, path)
        log.info("ratings exported path=%s watermark=%d", path, watermark)
        return watermark


def export_items_path(ratings_path: str | Path) -> Path:
    """Return the items Parquet path that belongs to an exported ratings Parquet path."""
    ratings_path = Path(ratings_path)
    stem = ratings_path.name.removesuffix(".parquet")
    return ratings_path.with_name(f"{stem}.items.parquet")


def read_export(path: str | Path, generation: str | None = None) -> RatingsData:
    """Read ratings exported by Database.export_ratings, without opening the database.

    `generation` is the exporting database's ratings_generation, which the export files do not
    contain; the consumer sends it with its reply.

    Raises DataFileError naming the file when either Parquet file is missing or unreadable.
    """
    path = Path(path)
    items_path = export_items_path(path)
    for required in (path, items_path):
        if not required.is_file():
            raise DataFileError(f"export file not found: {required}")

    con = duckdb.connect(":memory:")
    try:
        # Views with the database's table names let one set of queries serve both sources.
        con.execute(f"CREATE VIEW items AS SELECT * FROM read_parquet({sql_literal(items_path)})")
        con.execute(
            f"""
            CREATE VIEW ratings AS
            SELECT user_idx, item_idx, rating, timestamp, updated_seq
            FROM read_parquet({sql_literal(path)})
            """
        )
        con.execute(
            f"""
            CREATE VIEW users AS
            SELECT DISTINCT user_idx, user_id FROM read_parquet({sql_literal(path)})
            """
        )
        return dataclasses.replace(_fetch_ratings_data(con), generation=generation)
    except duckdb.Error as exc:
        raise DataFileError(f"export {path} could not be read: {exc}") from exc
    finally:
        con.close()


def _ratings_generation(con: duckdb.DuckDBPyConnection) -> str | None:
    """Return the ratings_generation id, or None where the table does not exist (an export's
    views, or a read-only database made by an earlier release)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ratings_generation' AND NOT temporary"
    ).fetchall()[0][0]
    if not exists:
        return None
    rows = con.execute("SELECT id FROM ratings_generation").fetchall()
    return str(rows[0][0]) if rows else None


def _fetch_ratings_data(con: duckdb.DuckDBPyConnection) -> RatingsData:
    """Read tables (or views) users, items and ratings into a RatingsData."""
    users = con.execute("SELECT user_idx, user_id FROM users ORDER BY user_idx").fetchnumpy()
    n_users = users["user_idx"].shape[0]
    if n_users and int(users["user_idx"][-1]) != n_users - 1:
        raise DataFileError(f"user indices are not dense: {n_users} users, highest user_idx {users['user_idx'][-1]}")

    items = con.execute(
        "SELECT item_idx, item_id, coalesce(title, '') AS title FROM items ORDER BY item_idx"
    ).fetchnumpy()
    n_items = items["item_idx"].shape[0]
    if n_items and int(items["item_idx"][-1]) != n_items - 1:
        raise DataFileError(f"item indices are not dense: {n_items} items, highest item_idx {items['item_idx'][-1]}")

    generation = _ratings_generation(con)
    current = current_ratings_sql(con)
    ratings = con.execute(
        f"SELECT user_idx, item_idx, rating, timestamp FROM {current} ORDER BY user_idx, item_idx"
    ).fetchnumpy()
    watermark = con.execute(f"SELECT coalesce(max(updated_seq), 0) FROM {current}").fetchall()[0][0]

    # Genre names come from the data, sorted, so a genre's index is its rank among the names.
    genre_names = con.execute(
        "SELECT DISTINCT genre FROM (SELECT unnest(genres) AS genre FROM items) ORDER BY genre"
    ).fetchnumpy()["genre"]
    pairs = con.execute(
        """
        WITH pairs AS (SELECT DISTINCT item_idx, unnest(genres) AS genre FROM items),
             names AS (SELECT genre, (row_number() OVER (ORDER BY genre) - 1)::INTEGER AS genre_idx
                       FROM (SELECT DISTINCT genre FROM pairs))
        SELECT p.item_idx, n.genre_idx FROM pairs p JOIN names n ON n.genre = p.genre
        ORDER BY p.item_idx, n.genre_idx
        """
    ).fetchnumpy()
    indptr, indices = genre_csr(pairs["item_idx"], pairs["genre_idx"], n_items)

    return RatingsData(
        user_idx=np.asarray(ratings["user_idx"], dtype=np.int32),
        item_idx=np.asarray(ratings["item_idx"], dtype=np.int32),
        rating=np.asarray(ratings["rating"], dtype=np.float32),
        timestamp=np.asarray(ratings["timestamp"], dtype=np.int64),
        user_ids=unicode_array(users["user_id"]),
        item_ids=unicode_array(items["item_id"]),
        item_titles=unicode_array(items["title"]),
        genre_names=unicode_array(genre_names),
        item_genres_indptr=indptr,
        item_genres_indices=indices,
        watermark=int(watermark),
        generation=generation,
    )


def _required_timestamp(event: RatingRecord) -> int:
    if event.timestamp is None:
        raise ValueError(
            f"timestamp: missing for user_id={event.user_id} item_id={event.item_id}; "
            "the consumer fills it from the stream id before apply_ratings"
        )
    return int(event.timestamp)


def sql_literal(path: str | Path) -> str:
    """Quote a file path as a SQL string literal (COPY takes no parameters)."""
    return "'" + str(path).replace("'", "''") + "'"
