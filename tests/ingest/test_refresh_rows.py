"""RefreshRows: entries relative to the current snapshot only when that snapshot can complete them."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.refresh_rows import RefreshRows
from store.database import Database
from store.snapshots import SnapshotStore
from tests.store.snapshot_factory import make_snapshot_data

TRAINING_STARS = np.array([4.0, 3.0, 2.5, 5.0, 1.0, 2.0, 3.5, 4.5, 0.5], np.float32)


def publish(store: SnapshotStore, db: Database, **changes) -> int:
    """Publish the small snapshot as if trained on `db`, with training ratings."""
    fields = {"seen_ratings": TRAINING_STARS, "ratings_generation": db.ratings_generation(), **changes}
    return store.publish(make_snapshot_data(**fields))


@pytest.fixture
def db(tmp_path):
    with Database(tmp_path / "streamrec.duckdb", keep_index=True) as database:
        for seq in range(1, 6):
            database.apply_rating_columns(
                ["alice", "bob"], [str(seq), "10"], np.array([4.0, float(seq % 5 + 0.5)], np.float32),
                np.array([seq, seq]),
            )
        yield database


def test_no_snapshot_gives_complete_rows(db, tmp_path):
    rows = RefreshRows(db, tmp_path / "snapshots")

    assert rows.base() is None
    assert rows(["alice"]).since_seq is None
    assert len(rows(["alice"]).item_idx) == 5


def test_snapshot_with_training_ratings_gives_newer_rows(db, tmp_path):
    publish(SnapshotStore(tmp_path / "snapshots"), db, watermark=3)
    rows = RefreshRows(db, tmp_path / "snapshots")

    alice = rows(["alice", "bob"])

    assert rows.base() == 3
    assert alice.since_seq == 3
    assert sorted(alice["alice"][0].tolist()) == ["4", "5"]
    assert alice["bob"][0].tolist() == ["10"]


def test_base_follows_current_version(db, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    publish(store, db, watermark=3)
    rows = RefreshRows(db, tmp_path / "snapshots")
    assert rows.base() == 3

    publish(store, db, watermark=1)

    assert rows.base() == 1


def test_snapshot_without_training_ratings_gives_complete_rows(db, tmp_path):
    publish(SnapshotStore(tmp_path / "snapshots"), db, watermark=3, seen_ratings=None)

    assert RefreshRows(db, tmp_path / "snapshots").base() is None


@pytest.mark.parametrize("generation", [None, "another database"])
def test_other_ratings_generation_gives_complete_rows(db, tmp_path, generation):
    publish(SnapshotStore(tmp_path / "snapshots"), db, watermark=3, ratings_generation=generation)

    assert RefreshRows(db, tmp_path / "snapshots").base() is None


def test_watermark_above_database_gives_complete_rows(db, tmp_path):
    # A snapshot trained on another database's later batches cannot complete these rows.
    publish(SnapshotStore(tmp_path / "snapshots"), db, watermark=6)

    assert RefreshRows(db, tmp_path / "snapshots").base() is None


def test_deltas_off_gives_complete_rows(db, tmp_path):
    publish(SnapshotStore(tmp_path / "snapshots"), db, watermark=3)

    assert RefreshRows(db, tmp_path / "snapshots", deltas=False).base() is None


def test_unreadable_current_gives_complete_rows(db, tmp_path):
    store = SnapshotStore(tmp_path / "snapshots")
    publish(store, db, watermark=3)
    rows = RefreshRows(db, tmp_path / "snapshots")
    assert rows.base() == 3

    (tmp_path / "snapshots" / "CURRENT").write_text("not a version\n")

    assert rows.base() is None
    assert rows(["alice"]).since_seq is None
