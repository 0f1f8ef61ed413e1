"""Pending rating changes: the rating_changes table, how readers see through it, and folding it.

The ingest consumer appends new values of existing pairs to rating_changes instead of updating
ratings in place, because an in-place update must find its rows by scanning the whole table.
Folding applies them in one pass, when enough have gathered or before a full read.
"""

from __future__ import annotations

import logging
import time

import duckdb

log = logging.getLogger(__name__)

# For each pair in rating_changes, its newest change.
_LATEST_CHANGES = """
    SELECT user_idx, item_idx, rating, timestamp, updated_seq FROM rating_changes
    QUALIFY row_number() OVER (PARTITION BY user_idx, item_idx ORDER BY updated_seq DESC) = 1
"""


def pending_changes(con: duckdb.DuckDBPyConnection) -> int:
    """Count the rows of rating_changes; 0 where the table does not exist (an export's views)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rating_changes' AND NOT temporary"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return int(con.execute("SELECT count(*) FROM rating_changes").fetchall()[0][0])


def current_ratings_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Return SQL for the current ratings: the ratings table, seen through any pending changes."""
    if pending_changes(con) == 0:
        return "ratings"
    return f"""(
        SELECT r.user_idx, r.item_idx,
               coalesce(c.rating, r.rating) AS rating,
               coalesce(c.timestamp, r.timestamp) AS timestamp,
               coalesce(c.updated_seq, r.updated_seq) AS updated_seq
        FROM ratings r LEFT JOIN ({_LATEST_CHANGES}) c USING (user_idx, item_idx)
    )"""


def fold_changes(con: duckdb.DuckDBPyConnection) -> int:
    """Apply pending changes to ratings and empty rating_changes; return the rows folded.

    Call inside a transaction.
    """
    count = pending_changes(con)
    if count == 0:
        return 0
    started = time.perf_counter()
    con.execute(
        f"""
        UPDATE ratings SET rating = c.rating, timestamp = c.timestamp, updated_seq = c.updated_seq
        FROM ({_LATEST_CHANGES}) c
        WHERE ratings.user_idx = c.user_idx AND ratings.item_idx = c.item_idx
        """
    )
    con.execute("DELETE FROM rating_changes")
    log.info("rating changes folded rows=%d seconds=%.2f", count, time.perf_counter() - started)
    return count


def drop_ratings_primary_key(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuild a ratings table made by an earlier release without its primary key.

    DuckDB cannot drop a constraint, so the rows are copied into a new table. Call inside a
    transaction; it does nothing when the table has no primary key.
    """
    has_key = con.execute(
        """
        SELECT count(*) FROM duckdb_constraints()
        WHERE table_name = 'ratings' AND constraint_type = 'PRIMARY KEY'
        """
    ).fetchall()[0][0]
    if not has_key:
        return
    started = time.perf_counter()
    log.info("ratings table rebuilding without its primary key (once, for a database made by an "
             "earlier release)")
    con.execute(
        """
        CREATE TABLE ratings_unkeyed AS
        SELECT user_idx::INTEGER AS user_idx, item_idx::INTEGER AS item_idx, rating::REAL AS rating,
               timestamp::BIGINT AS timestamp, updated_seq::BIGINT AS updated_seq
        FROM ratings ORDER BY user_idx, item_idx
        """
    )
    rows = con.execute("SELECT count(*) FROM ratings_unkeyed").fetchall()[0][0]
    con.execute("DROP TABLE ratings")
    con.execute("ALTER TABLE ratings_unkeyed RENAME TO ratings")
    for column in ("user_idx", "item_idx", "rating", "timestamp", "updated_seq"):
        con.execute(f"ALTER TABLE ratings ALTER COLUMN {column} SET NOT NULL")
    log.info("ratings table rebuilt without its primary key rows=%d seconds=%.1f",
             rows, time.perf_counter() - started)
