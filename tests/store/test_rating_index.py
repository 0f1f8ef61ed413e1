"""The consumer's in-memory rating index against the SQL-only write path, and the table upgrade."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

import store.database
import store.rating_index
from store.database import Database


def random_batches(seed: int, n_batches: int, size: int):
    """Batches of (user_ids, item_ids, ratings, timestamps) with repeats, ties and late events."""
    rng = np.random.default_rng(seed)
    for _ in range(n_batches):
        users = [f"u{k}" for k in rng.integers(0, 30, size)]
        items = [f"i{k}" for k in rng.integers(0, 20, size)]
        stars = rng.integers(1, 11, size).astype(np.float32) / 2
        times = rng.integers(0, 6, size).astype(np.int64)
        yield users, items, stars, times


def apply_all(db: Database, batches) -> list:
    results = []
    for number, (users, items, stars, times) in enumerate(batches, start=1):
        batch = db.apply_rating_columns(users, items, stars, times, last_stream_id=f"{number}-0")
        results.append((batch.seq, batch.user_ids, batch.written, batch.stale, batch.new_users, batch.new_items))
    return results


def snapshot_of(db: Database) -> dict:
    data = db.ratings_arrays()
    return {
        "pairs": list(zip(data.user_idx.tolist(), data.item_idx.tolist())),
        "rating": data.rating.tolist(),
        "timestamp": data.timestamp.tolist(),
        "user_ids": data.user_ids.tolist(),
        "item_ids": data.item_ids.tolist(),
        "watermark": data.watermark,
    }


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch):
    """Merge extras and fold changes after a few rows, so both happen within a short test."""
    monkeypatch.setattr(store.rating_index, "MERGE_MIN", 25)
    monkeypatch.setattr(store.rating_index, "MERGE_SHARE", 0.0)
    monkeypatch.setattr(store.database, "FOLD_CHANGES_AT", 7)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indexed_writes_match_sql(tmp_path: Path, seed: int, small_thresholds):
    batches = list(random_batches(seed, n_batches=12, size=40))
    with Database(tmp_path / "sql.duckdb") as sql_db:
        expected = apply_all(sql_db, batches)
        expected_state = snapshot_of(sql_db)
        expected_user = sql_db.user_ratings(["u3", "u7"])
    with Database(tmp_path / "indexed.duckdb", keep_index=True) as indexed_db:
        got = apply_all(indexed_db, batches)
        got_user = indexed_db.user_ratings(["u3", "u7"])
        got_state = snapshot_of(indexed_db)

    assert got == expected
    assert got_state == expected_state
    assert set(got_user) == set(expected_user)
    for user_id, (item_ids, stars) in expected_user.items():
        assert got_user[user_id][0].tolist() == item_ids.tolist()
        assert got_user[user_id][1].tolist() == stars.tolist()
    # 12 batches of 40 events over 600 pairs: some pairs were rated again, so changes were folded.
    assert any(stale for _, _, _, stale, _, _ in got)


def test_one_row_per_pair_after_reopen(tmp_path: Path, small_thresholds):
    path = tmp_path / "streamrec.duckdb"
    batches = list(random_batches(5, n_batches=10, size=50))
    with Database(path, keep_index=True) as db:
        apply_all(db, batches[:5])
    with Database(path, keep_index=True) as db:
        apply_all(db, batches[5:])
        state = snapshot_of(db)
        duplicates = db.connection.execute(
            "SELECT count(*) FROM (SELECT user_idx, item_idx FROM ratings GROUP BY ALL HAVING count(*) > 1)"
        ).fetchall()[0][0]
    with Database(tmp_path / "sql.duckdb") as sql_db:
        apply_all(sql_db, batches)
        assert snapshot_of(sql_db) == state
    assert duplicates == 0


def test_read_only_sees_unfolded_changes(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    db = Database(path, keep_index=True)
    db.apply_rating_columns(["a", "a"], ["1", "2"], np.array([4.0, 3.0], np.float32), np.array([1, 1]))
    db.apply_rating_columns(["a"], ["1"], np.array([1.5], np.float32), np.array([5]))
    assert db.connection.execute("SELECT count(*) FROM rating_changes").fetchall()[0][0] == 1
    # The connection goes without Database.close, which would fold, as a killed consumer's does.
    db.connection.close()

    with Database(path, read_only=True) as reader:
        data = reader.ratings_arrays()
        assert data.rating.tolist() == [1.5, 3.0]
        assert data.timestamp.tolist() == [5, 1]
        assert data.watermark == 2
        assert reader.users_updated_since(1) == ["a"]
        assert reader.user_ratings(["a"])["a"][1].tolist() == [1.5, 3.0]

    with Database(path, keep_index=True) as db:  # opening the index folds what was left
        assert db.connection.execute("SELECT count(*) FROM rating_changes").fetchall()[0][0] == 0
        assert db.user_ratings(["a"])["a"][1].tolist() == [1.5, 3.0]


def test_clean_close_folds_changes(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    with Database(path, keep_index=True) as db:
        db.apply_rating_columns(["a"], ["1"], np.array([4.0], np.float32), np.array([1]))
        db.apply_rating_columns(["a"], ["1"], np.array([2.0], np.float32), np.array([2]))

    con = duckdb.connect(str(path), read_only=True)
    pending = con.execute("SELECT count(*) FROM rating_changes").fetchall()[0][0]
    stars = con.execute("SELECT rating FROM ratings").fetchall()
    con.close()
    assert pending == 0
    assert stars == [(2.0,)]


def test_merge_rejected_with_index(tmp_path: Path):
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        with pytest.raises(RuntimeError, match="merge_items: not available"):
            db.merge_items("SELECT 0 AS pos, 'x' AS item_id, 'X' AS title, []::VARCHAR[] AS genres")


def test_keep_index_rejected_read_only(tmp_path: Path):
    Database(tmp_path / "streamrec.duckdb").close()
    with pytest.raises(ValueError, match="keep_index: needs a database opened for writing"):
        Database(tmp_path / "streamrec.duckdb", read_only=True, keep_index=True)


def test_primary_key_table_upgraded(tmp_path: Path):
    path = tmp_path / "streamrec.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE users (user_idx INTEGER PRIMARY KEY, user_id VARCHAR UNIQUE NOT NULL)")
    con.execute(
        "CREATE TABLE items (item_idx INTEGER PRIMARY KEY, item_id VARCHAR UNIQUE NOT NULL, "
        "title VARCHAR, genres VARCHAR[])"
    )
    con.execute(
        "CREATE TABLE ratings (user_idx INTEGER NOT NULL, item_idx INTEGER NOT NULL, rating REAL NOT NULL, "
        "timestamp BIGINT NOT NULL, updated_seq BIGINT NOT NULL, PRIMARY KEY (user_idx, item_idx))"
    )
    con.execute("INSERT INTO users VALUES (0, 'a'), (1, 'b')")
    con.execute("INSERT INTO items VALUES (0, 'x', 'X', []), (1, 'y', 'Y', [])")
    con.execute("INSERT INTO ratings VALUES (1, 0, 2.0, 5, 0), (0, 1, 4.0, 5, 0), (0, 0, 3.0, 5, 0)")
    con.close()

    with Database(path, keep_index=True) as db:
        keys = db.connection.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'ratings' "
            "AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()[0][0]
        assert keys == 0
        batch = db.apply_rating_columns(["a"], ["x"], np.array([1.0], np.float32), np.array([6]))
        assert (batch.written, batch.new_users, batch.new_items) == (1, 0, 0)
        data = db.ratings_arrays()
    assert list(zip(data.user_idx.tolist(), data.item_idx.tolist(), data.rating.tolist())) == [
        (0, 0, 1.0), (0, 1, 4.0), (1, 0, 2.0),
    ]


def test_index_reloaded_after_failed_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        original = store.rating_index.RatingIndex.store
        calls = []

        def fail_once(self, *args):
            calls.append(1)
            if len(calls) == 1:
                raise MemoryError("no room for extras")
            return original(self, *args)

        monkeypatch.setattr(store.rating_index.RatingIndex, "store", fail_once)
        first = db.apply_rating_columns(["a"], ["1"], np.array([4.0], np.float32), np.array([1]))
        second = db.apply_rating_columns(["a"], ["1"], np.array([2.0], np.float32), np.array([2]))
        rows = db.connection.execute("SELECT count(*) FROM ratings").fetchall()[0][0]
        stars = db.user_ratings(["a"])["a"][1].tolist()

    assert first.written == 1
    assert second.written == 1
    assert rows == 1
    assert stars == [2.0]


def test_kept_seq_follows_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def stored_seq(db: Database) -> int:
        return db.connection.execute("SELECT max(seq) FROM ingest_progress").fetchall()[0][0]

    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        four_stars_at_1 = np.array([4.0], np.float32), np.array([1])
        assert db.apply_rating_columns(["a"], ["1"], *four_stars_at_1).seq == 1
        assert db.current_seq() == stored_seq(db) == 1

        # A batch that fails inside its transaction leaves the seq where it was.
        def disk_full(*args):
            raise OSError("disk full")

        monkeypatch.setattr(store.database, "write_batch", disk_full)
        with pytest.raises(OSError):
            db.apply_rating_columns(["a"], ["2"], *four_stars_at_1)
        monkeypatch.undo()
        assert db.current_seq() == stored_seq(db) == 1

        # Inside a caller's transaction a rollback could not undo the index, so it is rejected.
        with pytest.raises(ValueError, match="outside transaction"):
            with db.transaction():
                db.apply_rating_columns(["b"], ["1"], *four_stars_at_1)
        assert db.current_seq() == stored_seq(db) == 1
        assert "b" not in db.user_ratings(["b"])
        assert db.apply_rating_columns(["c"], ["1"], *four_stars_at_1).seq == 2
    with Database(tmp_path / "streamrec.duckdb", read_only=True) as db:
        assert db.current_seq() == 2


@pytest.mark.parametrize("new_items", [5, 200])
def test_user_rows_sorted_with_extras(tmp_path: Path, new_items: int):
    # Up to INSERT_EXTRAS_MAX extras are inserted into the sorted row, more sort the row whole.
    rng = np.random.default_rng(new_items)
    expected: dict[str, float] = {}
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        items = [f"i{k:04d}" for k in rng.permutation(300)]
        stars = rng.integers(1, 11, 300).astype(np.float32) / 2
        db.apply_rating_columns(["a"] * 100, items[:100], stars[:100], np.ones(100, np.int64))
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        # Reopened, the first 100 ratings are the CSR part and the next ones are extras.
        stop = 100 + new_items
        db.apply_rating_columns(["a"] * new_items, items[100:stop], stars[100:stop],
                                np.full(new_items, 2, np.int64))
        expected = {item: float(star) for item, star in zip(items[:stop], stars[:stop])}
        item_ids, ratings = db.user_ratings(["a"])["a"]
        item_idx = db.user_rows(["a"]).item_idx

    assert np.all(np.diff(item_idx) > 0)
    assert dict(zip(item_ids.tolist(), ratings.tolist())) == expected


def rows_by_user(rows) -> dict[str, list[tuple[str, float]]]:
    """UserRows as {user: sorted (item id, stars)}, for rows that may not be sorted by item."""
    return {user_id: sorted(zip(rows[user_id][0].tolist(), rows[user_id][1].tolist())) for user_id in rows}


@pytest.mark.parametrize("seed", [4, 5])
def test_rows_since_match_sql(tmp_path: Path, seed: int, small_thresholds):
    batches = list(random_batches(seed, n_batches=12, size=40))
    users = [f"u{k}" for k in range(30)]
    since_values = (0, 3, 6, 7, 11, 12)
    with Database(tmp_path / "sql.duckdb") as sql_db:
        apply_all(sql_db, batches)
        expected = {since: rows_by_user(sql_db.user_rows(users, since_seq=since)) for since in since_values}
    # The indexed database is reopened halfway, so the seqs of its CSR part come from the table.
    path = tmp_path / "indexed.duckdb"
    with Database(path, keep_index=True) as db:
        apply_all(db, batches[:6])
    with Database(path, keep_index=True) as db:
        for number, (user_ids, item_ids, stars, times) in enumerate(batches[6:], start=7):
            db.apply_rating_columns(user_ids, item_ids, stars, times, last_stream_id=f"{number}-0")
        got = {since: rows_by_user(db.user_rows(users, since_seq=since)) for since in since_values}
        rows = db.user_rows(users, since_seq=7)
        complete = rows_by_user(db.user_rows(users))

    assert rows.since_seq == 7
    # Every rating came from a batch, numbered from 1.
    assert got[0] == complete
    for since in since_values:
        assert got[since] == expected[since], since
    assert got[12] == {}
    assert 0 < len(got[11]) < len(got[0])


def test_merge_waits_while_extras_are_newer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store.rating_index, "MERGE_MIN", 10)
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as db:
        db.apply_rating_columns(["a"] * 20, [f"i{k}" for k in range(20)], np.ones(20, np.float32), np.ones(20))
        index = db._index
        merged_at_first = index._n_extra
        db.keep_recent_after(1)
        for batch in range(2, 5):
            items = [f"j{batch}-{k}" for k in range(6)]
            db.apply_rating_columns(["b"] * 6, items, np.full(6, 2.0, np.float32), np.full(6, batch))
        deferred = index._n_extra
        rows = db.user_rows(["a", "b"], since_seq=1)
        # Past twice the threshold the merge runs anyway.
        db.apply_rating_columns(["c"] * 6, [f"k{k}" for k in range(6)], np.ones(6, np.float32), np.full(6, 9))
        after_limit = index._n_extra

    assert merged_at_first == 0
    assert deferred == 18
    assert list(rows) == ["b"]
    assert len(rows.row("b")[0]) == 18
    assert after_limit == 0
