"""Tests for the versioned snapshot store."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest

import store.snapshots as snapshots
from store.errors import SnapshotError, SnapshotNotFoundError
from store.snapshots import SnapshotStore
from tests.store.snapshot_factory import make_snapshot_data


def test_publish_open_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = make_snapshot_data(watermark=42)

    version = store.publish(data)
    snapshot = store.open()

    assert version == 1
    assert store.current_version() == 1
    assert snapshot.version == 1
    for name in snapshots.ARRAY_DTYPES:
        loaded = getattr(snapshot, name)
        assert isinstance(loaded, np.memmap), name
        assert not loaded.flags.writeable, name
        np.testing.assert_array_equal(loaded, np.asarray(getattr(data, name)), err_msg=name)
    assert snapshot.global_mean == 3.5
    assert snapshot.rating_min == 0.5
    assert snapshot.rating_max == 5.0
    assert snapshot.watermark == 42
    assert snapshot.hyperparameters == data.hyperparameters
    assert snapshot.metrics == {"rmse": 0.9}
    assert snapshot.manifest["counts"] == {
        "users": 4, "items": 6, "genres": 3, "ratings": 9, "factors": 2
    }
    assert snapshot.created_at.endswith("+00:00")


def test_publish_stores_canonical_dtypes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    # float64 factors, int64 indices and an object array of ids all get converted.
    data = make_snapshot_data(
        item_factors=np.asarray(make_snapshot_data().item_factors, dtype=np.float64),
        seen_indices=np.asarray(make_snapshot_data().seen_indices, dtype=np.int64),
        item_ids=np.array(["10", "20", "30", "40", "50", "60"], dtype=object),
    )

    store.publish(data)
    snapshot = store.open()
    manifest = json.loads((tmp_path / "v000001" / "manifest.json").read_text())

    assert snapshot.item_factors.dtype == np.float32
    assert snapshot.seen_indices.dtype == np.int32
    assert snapshot.item_ids.dtype.kind == "U"
    assert snapshot.item_ids[5] == "60"
    assert manifest["arrays"]["item_ids"]["dtype"].startswith("<U")
    assert manifest["arrays"]["user_factors"]["shape"] == [4, 2]
    assert len(manifest["arrays"]["user_factors"]["sha256"]) == 64


def test_seen_items_and_item_genres(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())
    snapshot = store.open()

    assert snapshot.seen_items(0).tolist() == [0, 3]
    assert snapshot.seen_items(2).tolist() == []
    assert snapshot.item_genres(2).tolist() == [0, 2]
    assert snapshot.item_genres(4).tolist() == []


def test_id_lookups(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())
    snapshot = store.open()

    assert snapshot.item_index("30") == 2
    assert snapshot.item_index("999") is None
    assert snapshot.item_indices(["60", "999", "10"]).tolist() == [5, -1, 0]
    assert snapshot.item_indices([]).dtype == np.int64
    # Ids joined by encode_ids, as refresh entries carry them, give the same indices.
    assert snapshot.item_indices(b"2:603:9992:10").tolist() == [5, -1, 0]
    assert snapshot.user_index("carol") == 2
    assert snapshot.user_index("zoe") is None


def test_versions_increase_and_current_moves(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)

    assert store.versions() == []
    assert store.current_version() is None
    first = store.publish(make_snapshot_data(watermark=1))
    second = store.publish(make_snapshot_data(watermark=2))

    assert (first, second) == (1, 2)
    assert store.versions() == [1, 2]
    assert store.current_version() == 2
    assert (tmp_path / "CURRENT").read_text() == "2\n"
    assert store.open().watermark == 2
    assert store.open(1).watermark == 1


def test_version_directory_follows_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        version = SnapshotStore(tmp_path).publish(make_snapshot_data(watermark=1))
    finally:
        os.umask(old_umask)

    mode = stat.S_IMODE(os.stat(SnapshotStore(tmp_path).version_path(version)).st_mode)
    assert mode == 0o755


def test_open_without_snapshot_raises(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)

    with pytest.raises(SnapshotNotFoundError, match="no snapshot published"):
        store.open()
    store.publish(make_snapshot_data())
    with pytest.raises(SnapshotNotFoundError, match="snapshot 7 not found"):
        store.open(7)


def test_reader_during_publish_sees_old_version(tmp_path: Path, monkeypatch) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data(watermark=1))
    seen_during_publish = []
    write_array = snapshots._write_array

    def write_and_read(directory, name, array):
        entry = write_array(directory, name, array)
        # A second store object plays the part of a reader in another process.
        reader = SnapshotStore(tmp_path)
        seen_during_publish.append((reader.current_version(), reader.versions(), reader.open().watermark))
        return entry

    monkeypatch.setattr(snapshots, "_write_array", write_and_read)
    store.publish(make_snapshot_data(watermark=2))

    # (current version, published versions, watermark of the opened snapshot) after each file.
    assert seen_during_publish == [(1, [1], 1)] * len(snapshots.ARRAY_DTYPES)
    assert store.open().watermark == 2


def test_crashed_publish_leaves_only_tmp_dir(tmp_path: Path, monkeypatch) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data(watermark=1))
    write_array = snapshots._write_array

    def crash_on_seen(directory, name, array):
        if name == "seen_indices":
            raise OSError("disk full")
        return write_array(directory, name, array)

    monkeypatch.setattr(snapshots, "_write_array", crash_on_seen)
    with pytest.raises(OSError, match="disk full"):
        store.publish(make_snapshot_data(watermark=2))
    monkeypatch.setattr(snapshots, "_write_array", write_array)

    leftovers = [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".tmp-publish-")]
    assert len(leftovers) == 1
    assert store.versions() == [1]
    assert store.current_version() == 1
    assert store.open().watermark == 1

    assert store.prune(keep=5) == []
    assert not any(entry.name.startswith(".tmp-publish-") for entry in tmp_path.iterdir())
    assert store.publish(make_snapshot_data(watermark=3)) == 2


def test_next_publish_removes_crashed_tmp_dir(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data(watermark=1))
    crashed = tmp_path / ".tmp-publish-crashed"
    crashed.mkdir()
    (crashed / "user_factors.npy").write_bytes(b"partial")

    assert store.publish(make_snapshot_data(watermark=2)) == 2

    assert not crashed.exists()
    assert store.versions() == [1, 2]


def test_next_publish_removes_crashed_current_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data(watermark=1))
    crashed = tmp_path / "CURRENT.tmp-99999"
    crashed.write_text("1\n")

    assert store.publish(make_snapshot_data(watermark=2)) == 2

    assert not crashed.exists()
    assert (tmp_path / "CURRENT").read_text() == "2\n"


def test_verify_detects_corrupt_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())
    path = tmp_path / "v000001" / "item_bias.npy"
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))

    store.open()  # Without verification a same-size change goes unnoticed.
    with pytest.raises(SnapshotError, match="item_bias.npy: sha256 mismatch"):
        store.open(verify=True)


def test_verify_passes_intact_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())

    assert store.open(verify=True).version == 1


def test_open_detects_truncated_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())
    path = tmp_path / "v000001" / "user_factors.npy"
    path.write_bytes(path.read_bytes()[:-8])

    with pytest.raises(SnapshotError, match="user_factors.npy"):
        store.open()


def test_rollback_moves_current(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for watermark in (1, 2, 3):
        store.publish(make_snapshot_data(watermark=watermark))

    store.rollback(1)

    assert store.current_version() == 1
    assert store.open().watermark == 1
    assert store.versions() == [1, 2, 3]
    assert store.publish(make_snapshot_data(watermark=4)) == 4
    assert store.current_version() == 4


def test_rollback_unknown_version_raises(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.publish(make_snapshot_data())

    with pytest.raises(SnapshotNotFoundError, match=r"snapshot 5 not found .* \[1\]"):
        store.rollback(5)
    assert store.current_version() == 1


def test_prune_keeps_newest_and_current(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for watermark in range(5):
        store.publish(make_snapshot_data(watermark=watermark))
    store.rollback(1)

    deleted = store.prune(keep=2)

    assert deleted == [2, 3]
    assert store.versions() == [1, 4, 5]
    assert store.current_version() == 1
    assert store.open().version == 1


def test_prune_rejects_keep_below_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep: must be at least 1, got 0"):
        SnapshotStore(tmp_path).prune(keep=0)


@pytest.mark.parametrize("name", ["user_factors", "user_bias", "item_factors", "item_bias", "genre_factors"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_publish_rejects_non_finite(tmp_path: Path, name: str, bad_value: float) -> None:
    store = SnapshotStore(tmp_path)
    array = np.array(getattr(make_snapshot_data(), name), dtype=np.float32)
    array.flat[1] = bad_value

    with pytest.raises(SnapshotError, match=f"{name}: must be finite"):
        store.publish(make_snapshot_data(**{name: array}))
    assert store.versions() == []
    assert store.current_version() is None


def test_publish_rejects_non_finite_global_mean(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="global_mean: must be finite"):
        SnapshotStore(tmp_path).publish(make_snapshot_data(global_mean=float("nan")))


def test_publish_rejects_inconsistent_shapes(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = make_snapshot_data()

    with pytest.raises(SnapshotError, match=r"item_bias: expected shape \(6,\), got \(5,\)"):
        store.publish(make_snapshot_data(item_bias=data.item_bias[:5]))
    with pytest.raises(SnapshotError, match="factors: .* same number of columns"):
        store.publish(make_snapshot_data(genre_factors=np.zeros((3, 3), dtype=np.float32)))
    with pytest.raises(SnapshotError, match=r"seen_indices: must lie in \[0, 6\)"):
        store.publish(make_snapshot_data(seen_indices=np.array([0, 3, 1, 0, 1, 2, 3, 4, 6])))


def test_publish_rejects_unsorted_seen_row(tmp_path: Path) -> None:
    # Row 0 is [3, 0]. A drop across a row boundary (0 after 3, into row 3) is allowed.
    unsorted = np.array([3, 0, 1, 0, 1, 2, 3, 4, 5], dtype=np.int32)

    with pytest.raises(SnapshotError, match="seen_indices: each row must be sorted .* row 0"):
        SnapshotStore(tmp_path).publish(make_snapshot_data(seen_indices=unsorted))


def test_publish_rejects_pickle_only_manifest_values(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="manifest: hyperparameters and metrics must be plain JSON"):
        SnapshotStore(tmp_path).publish(make_snapshot_data(metrics={"rmse": object()}))


def test_publish_without_genres(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    data = make_snapshot_data(
        genre_factors=np.zeros((0, 2), dtype=np.float32),
        genre_names=np.array([], dtype=str),
        item_genres_indptr=np.zeros(7, dtype=np.int64),
        item_genres_indices=np.array([], dtype=np.int32),
    )

    store.publish(data)
    snapshot = store.open(verify=True)

    assert snapshot.genre_factors.shape == (0, 2)
    assert snapshot.genre_names.shape == (0,)


def _publish_many(snapshots_dir: str, count: int, start: multiprocessing.synchronize.Event) -> list[int]:
    start.wait()
    store = SnapshotStore(snapshots_dir)
    return [store.publish(make_snapshot_data()) for _ in range(count)]


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(2) as pool:
            pending = [pool.apply_async(_publish_many, (str(tmp_path), 4, start)) for _ in range(2)]
            start.set()
            results = [result.get(timeout=120) for result in pending]

    published = results[0] + results[1]
    assert sorted(published) == list(range(1, 9))
    assert results[0] == sorted(results[0])
    assert results[1] == sorted(results[1])
    assert SnapshotStore(tmp_path).versions() == list(range(1, 9))
    assert SnapshotStore(tmp_path).current_version() == 8


def test_training_ratings_round_trip(tmp_path: Path):
    stars = np.arange(9, dtype=np.float64) / 2
    store = SnapshotStore(tmp_path)
    version = store.publish(make_snapshot_data(seen_ratings=stars))

    snapshot = store.open(version, verify=True)

    assert snapshot.seen_ratings.dtype == np.float32
    assert snapshot.seen_ratings.tolist() == stars.tolist()
    assert "seen_ratings" in store.manifest(version)["arrays"]


def test_training_ratings_optional(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    version = store.publish(make_snapshot_data())

    assert store.open(version).seen_ratings is None
    assert "seen_ratings" not in store.manifest(version)["arrays"]


def test_training_ratings_rejected_when_misaligned(tmp_path: Path):
    with pytest.raises(SnapshotError, match=r"seen_ratings: expected shape \(9,\)"):
        SnapshotStore(tmp_path).publish(make_snapshot_data(seen_ratings=np.ones(8, np.float32)))
    with pytest.raises(SnapshotError, match="seen_ratings: must be finite"):
        SnapshotStore(tmp_path).publish(make_snapshot_data(seen_ratings=np.full(9, np.nan, np.float32)))
    assert SnapshotStore(tmp_path).versions() == []


def test_restore_keeps_training_ratings(tmp_path: Path):
    store = SnapshotStore(tmp_path)
    first = store.publish(make_snapshot_data(seen_ratings=np.ones(9, np.float32)))

    restored = store.restore(first)

    assert store.open(restored).seen_ratings.tolist() == [1.0] * 9
