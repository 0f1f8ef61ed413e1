"""store.database against a fresh DuckDB file per test."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from store.database import Database, export_items_path, read_export
from store.errors import DatabaseLockedError, DataFileError


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    rating: float
    timestamp: int | None


@pytest.fixture(params=[False, True], ids=["sql", "indexed"])
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Database:
    """A database written through SQL alone, or with the consumer's in-memory rating index."""
    with Database(tmp_path / "streamrec.duckdb", keep_index=request.param) as database:
        yield database


def reload_index(db: Database) -> None:
    """After rows written by plain SQL, which the in-memory index does not see."""
    if db.keeps_index:
        db.keep_index()


def stored(db: Database) -> list[tuple]:
    db.fold_changes()
    return db.connection.execute(
        """
        SELECT u.user_id, i.item_id, r.rating, r.timestamp, r.updated_seq
        FROM ratings r JOIN users u USING (user_idx) JOIN items i USING (item_idx)
        ORDER BY u.user_id, i.item_id
        """
    ).fetchall()


def test_schema_created_on_first_open(tmp_path: Path):
    path = tmp_path / "sub" / "streamrec.duckdb"
    with Database(path) as db:
        assert db.counts() == (0, 0, 0)
    assert path.is_file()
    with Database(path) as db:  # reopening re-runs the idempotent schema
        assert db.counts() == (0, 0, 0)


def test_apply_assigns_dense_indices(db: Database):
    batch = db.apply_ratings(
        [Event("alice", "10", 4.0, 100), Event("bob", "20", 3.0, 100), Event("alice", "20", 5.0, 101)],
        last_stream_id="5-0",
    )

    assert batch.seq == 1
    assert batch.user_ids == ["alice", "bob"]
    assert batch.written == 3
    assert batch.new_users == 2
    assert batch.new_items == 2
    users = db.connection.execute("SELECT user_idx, user_id FROM users ORDER BY 1").fetchall()
    assert users == [(0, "alice"), (1, "bob")]
    items = db.connection.execute("SELECT item_idx, item_id, title, genres FROM items ORDER BY 1").fetchall()
    assert items == [(0, "10", None, []), (1, "20", None, [])]
    assert db.ingest_progress() == ("5-0", 1)


def test_apply_integer_ids_stored_as_strings(db: Database):
    db.apply_ratings([Event(7, 42, 4.0, 1)])
    assert stored(db) == [("7", "42", 4.0, 1, 1)]


def test_integer_and_text_ids_same_user(db: Database):
    db.apply_rating_columns([7], [42], np.array([4.0], np.float32), np.array([1]))
    batch = db.apply_rating_columns(["7"], ["42"], np.array([2.0], np.float32), np.array([2]))

    assert (batch.new_users, batch.new_items, batch.written) == (0, 0, 1)
    assert stored(db) == [("7", "42", 2.0, 2, 2)]


def test_newer_timestamp_wins_in_any_order(db: Database):
    old, new = Event("u", "i", 2.0, 1000), Event("u", "i", 4.5, 2000)

    db.apply_ratings([new])
    db.apply_ratings([old])
    db.apply_ratings([new, old])
    db.apply_ratings([old, new])

    assert db.counts().ratings == 1
    assert stored(db)[0][:4] == ("u", "i", 4.5, 2000)
    assert stored(db)[0][4] == 4  # the last batch that carried the winner rewrote it


def test_older_event_reports_stale(db: Database):
    db.apply_ratings([Event("u", "i", 4.5, 2000)])
    batch = db.apply_ratings([Event("u", "i", 2.0, 1000)])

    assert batch.written == 0
    assert batch.stale == 1
    assert batch.user_ids == []
    assert stored(db) == [("u", "i", 4.5, 2000, 1)]


def test_equal_timestamp_later_batch_wins(db: Database):
    db.apply_ratings([Event("u", "i", 2.0, 1000)])
    batch = db.apply_ratings([Event("u", "i", 3.0, 1000)])

    assert batch.written == 1
    assert stored(db) == [("u", "i", 3.0, 1000, 2)]


def test_duplicates_in_batch_keep_newest(db: Database):
    batch = db.apply_ratings(
        [
            Event("u", "i", 1.0, 300),
            Event("u", "i", 5.0, 100),
            Event("u", "i", 2.0, 300),  # same timestamp as the first, later in the stream
        ]
    )

    assert batch.received == 3
    assert batch.written == 1
    assert batch.stale == 2
    assert stored(db) == [("u", "i", 2.0, 300, 1)]


def test_empty_batch_changes_nothing(db: Database):
    db.apply_ratings([Event("u", "i", 1.0, 1)], last_stream_id="1-0")
    batch = db.apply_ratings([])
    assert batch.seq == 1
    assert db.ingest_progress() == ("1-0", 1)


def test_missing_timestamp_rejected(db: Database):
    with pytest.raises(ValueError, match="timestamp: missing"):
        db.apply_ratings([Event("u", "i", 1.0, None)])
    assert db.counts() == (0, 0, 0)


def test_failed_batch_rolls_back(db: Database, monkeypatch: pytest.MonkeyPatch):
    db.apply_ratings([Event("u", "i", 1.0, 1)], last_stream_id="1-0")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        # The progress row is written last, after the ratings.
        patch.setattr(db, "_record_progress", fail)
        with pytest.raises(RuntimeError):
            db.apply_ratings([Event("v", "j", 1.0, 1), Event("u", "i", 5.0, 2)], last_stream_id="2-0")

    assert db.ingest_progress() == ("1-0", 1)
    assert db.counts() == (1, 1, 1)
    assert db.user_ratings(["u", "v"])["u"][1].tolist() == [1.0]
    # The failed batch left no trace: the same users and items come out new and dense.
    batch = db.apply_ratings([Event("v", "j", 2.0, 1)], last_stream_id="3-0")
    assert (batch.new_users, batch.new_items, batch.written) == (1, 1, 1)
    assert db.ratings_arrays().user_ids.tolist() == ["u", "v"]


def test_user_ratings_complete_and_current(db: Database):
    db.apply_ratings([Event("a", "1", 4.0, 1), Event("a", "2", 3.0, 1), Event("b", "2", 1.5, 1)])
    db.apply_ratings([Event("a", "1", 2.5, 9)])

    result = db.user_ratings(["a", "b", "nobody", "a"])

    assert set(result) == {"a", "b"}
    item_ids, ratings = result["a"]
    assert item_ids.tolist() == ["1", "2"]
    assert ratings.dtype == np.float32
    assert ratings.tolist() == [2.5, 3.0]
    assert result["b"][0].tolist() == ["2"]
    assert result["b"][1].tolist() == [1.5]


def test_users_updated_since(db: Database):
    db.apply_ratings([Event("a", "1", 4.0, 1), Event("b", "1", 4.0, 1)])
    db.apply_ratings([Event("c", "1", 4.0, 1)])
    db.apply_ratings([Event("a", "2", 4.0, 1)])

    assert db.users_updated_since(0) == ["a", "b", "c"]
    assert db.users_updated_since(1) == ["a", "c"]
    assert db.users_updated_since(3) == []


def test_ratings_arrays_layout(db: Database):
    db.connection.execute(
        """
        INSERT INTO items VALUES (0, 'm1', 'One', ['Drama', 'Action']), (1, 'm2', 'Two', []),
                                 (2, 'm3', 'Three, with comma', ['IMAX', 'Action', 'Action'])
        """
    )
    reload_index(db)
    db.apply_ratings([Event("x", "m3", 5.0, 7), Event("y", "m1", 1.0, 8), Event("x", "new", 3.0, 9)])

    data = db.ratings_arrays()

    assert data.n_users == 2
    assert data.n_items == 4
    assert data.user_ids.tolist() == ["x", "y"]
    assert data.item_ids.tolist() == ["m1", "m2", "m3", "new"]
    assert data.item_titles.tolist() == ["One", "Two", "Three, with comma", ""]
    assert data.user_idx.dtype == np.int32
    assert data.rating.dtype == np.float32
    assert list(zip(data.user_idx.tolist(), data.item_idx.tolist(), data.rating.tolist())) == [
        (0, 2, 5.0),
        (0, 3, 3.0),
        (1, 0, 1.0),
    ]
    assert data.genre_names.tolist() == ["Action", "Drama", "IMAX"]
    assert data.item_genres_indptr.tolist() == [0, 2, 2, 4, 4]
    assert data.item_genres_indices.tolist() == [0, 1, 0, 2]
    assert data.item_genres(2) == ["Action", "IMAX"]
    assert data.watermark == 1


def test_export_round_trip(db: Database, tmp_path: Path):
    db.connection.execute("INSERT INTO items VALUES (0, 'm1', 'Café \"Noir\"', ['Film-Noir'])")
    reload_index(db)
    db.apply_ratings([Event("x", "m1", 5.0, 7), Event("y", "m2", 1.0, 8)])
    db.apply_ratings([Event("y", "m1", 2.0, 9)])
    path = tmp_path / "exports" / "ratings-2.parquet"

    watermark = db.export_ratings(path)
    exported = read_export(path)
    direct = db.ratings_arrays()

    assert watermark == 2
    assert export_items_path(path).is_file()
    assert not list(path.parent.glob("*.tmp"))
    assert exported.watermark == direct.watermark
    for field in (
        "user_idx", "item_idx", "rating", "timestamp", "user_ids", "item_ids", "item_titles",
        "genre_names", "item_genres_indptr", "item_genres_indices",
    ):
        np.testing.assert_array_equal(getattr(exported, field), getattr(direct, field), err_msg=field)


def test_read_export_missing_items_file(db: Database, tmp_path: Path):
    db.apply_ratings([Event("x", "m1", 5.0, 7)])
    path = tmp_path / "ratings-1.parquet"
    db.export_ratings(path)
    export_items_path(path).unlink()

    with pytest.raises(DataFileError, match="ratings-1.items.parquet"):
        read_export(path)


def test_read_only_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing.duckdb"):
        Database(tmp_path / "nothing.duckdb", read_only=True)


def test_read_only_open_reads(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    with Database(path) as db:
        db.apply_ratings([Event("x", "m1", 5.0, 7)])
    with Database(path, read_only=True) as db:
        assert db.counts() == (1, 1, 1)
        assert db.ratings_arrays().nnz == 1


def test_locked_file_raises_clear_error(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    Database(path).close()
    holder_code = textwrap.dedent(
        f"""
        import sys, duckdb
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for read_only in (False, True):
            with pytest.raises(DatabaseLockedError) as caught:
                Database(path, read_only=read_only)
            assert str(path) in str(caught.value)
            assert "ingest consumer" in str(caught.value)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_ratings_generation_kept_until_bulk_load(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    with Database(path) as db:
        created = db.ratings_generation()
        db.apply_rating_columns(["a"], ["1"], np.array([4.0], np.float32), np.array([1]))
        after_batch = db.ratings_generation()
    with Database(path) as db:
        reopened = db.ratings_generation()
        with db.transaction():
            db.connection.execute("CREATE TEMP TABLE bulk AS SELECT 1 AS pos, 'b' AS user_id, '2' AS item_id, 3.0 AS rating, 5 AS timestamp")
            db.merge_ratings("SELECT * FROM bulk", seq=0)
        after_bulk = db.ratings_generation()
    with Database(path, read_only=True) as db:
        read_only = db.ratings_generation()
        data = db.ratings_arrays()

    assert len(created) == 32
    assert after_batch == created
    assert reopened == created
    assert after_bulk != created
    assert read_only == after_bulk
    assert data.generation == after_bulk
