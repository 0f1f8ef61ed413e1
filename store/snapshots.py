"""Versioned model snapshots on disk: publish, open (memory-mapped), roll back and prune.

Layout under the snapshots directory:

    CURRENT            one line, the version number readers serve
    v000007/           one published version: <array>.npy files and manifest.json
    .publish.lock      held (flock) by a publisher or a pruner while it works
    .tmp-publish-*/    a publish in progress, or one that crashed; readers never look here

A version is written into a temporary directory and renamed into place, and CURRENT is replaced
with an atomic rename, so a reader sees either the old version or the new one, never a mix.
Published versions are never modified.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import als
from store.errors import SnapshotError, SnapshotNotFoundError
from store.id_lookup import EncodedIdLookup

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".publish.lock"
TMP_PREFIX = ".tmp-publish-"
VERSION_DIR = re.compile(r"^v(\d{6,})$")

# Canonical dtype of every array in a snapshot ("U" means any numpy unicode width).
ARRAY_DTYPES: dict[str, str] = {
    "user_factors": "float32",
    "user_bias": "float32",
    "item_factors": "float32",
    "item_bias": "float32",
    "genre_factors": "float32",
    "user_ids": "U",
    "item_ids": "U",
    "item_titles": "U",
    "genre_names": "U",
    "item_genres_indptr": "int64",
    "item_genres_indices": "int32",
    "seen_indptr": "int64",
    "seen_indices": "int32",
    "item_rating_count": "int32",
}

# Arrays a version may lack, with their dtypes. Versions published by earlier releases have no
# seen_ratings, so refreshes against them need every user's complete ratings.
OPTIONAL_ARRAY_DTYPES: dict[str, str] = {
    "seen_ratings": "float32",
}

# Arrays that must hold only finite values before a version may be published.
FINITE_ARRAYS = ("user_factors", "user_bias", "item_factors", "item_bias", "genre_factors", "seen_ratings")


@dataclass(kw_only=True)
class SnapshotData:
    """The contents of one snapshot version: the trained model, the id maps and the manifest fields.

    Users and items are rows in dense index order (user_idx, item_idx). `item_genres_*` is a CSR
    matrix item -> genre index, and `seen_*` a CSR matrix user -> item_idx of the ratings the model
    was trained on, each row sorted ascending. `seen_ratings`, when present, gives those ratings'
    stars in the same order.
    """

    user_factors: np.ndarray
    user_bias: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    genre_factors: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    genre_names: np.ndarray
    item_genres_indptr: np.ndarray
    item_genres_indices: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    item_rating_count: np.ndarray
    seen_ratings: np.ndarray | None = None

    global_mean: float
    rating_min: float
    rating_max: float
    watermark: int
    # The training database's ratings_generation; None when unknown (an earlier release).
    ratings_generation: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """Data sizes recorded in the manifest: users, items, genres, ratings and factors."""
        return {
            "users": int(self.user_factors.shape[0]),
            "items": int(self.item_factors.shape[0]),
            "genres": int(self.genre_factors.shape[0]),
            "ratings": int(self.seen_indices.shape[0]),
            "factors": int(self.item_factors.shape[1]),
        }

    def seen_items(self, user_idx: int) -> np.ndarray:
        """Return the sorted item_idx array user `user_idx` rated in training (a view, no copy)."""
        start, stop = self.seen_indptr[user_idx], self.seen_indptr[user_idx + 1]
        return self.seen_indices[start:stop]

    def item_genres(self, item_idx: int) -> np.ndarray:
        """Return the genre indices of item `item_idx` (a view, no copy)."""
        start, stop = self.item_genres_indptr[item_idx], self.item_genres_indptr[item_idx + 1]
        return self.item_genres_indices[start:stop]


@dataclass(kw_only=True)
class Snapshot(SnapshotData):
    """A published version opened for reading; its arrays are read-only memory maps."""

    version: int
    created_at: str
    path: Path
    manifest: dict[str, Any]
    _item_index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _user_index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _encoded_lookup: EncodedIdLookup | None = field(default=None, init=False, repr=False, compare=False)

    def item_index(self, item_id: str) -> int | None:
        """Return the item_idx of an external item id, or None when this version lacks the item."""
        return self._item_ids_to_idx().get(str(item_id))

    def item_indices(self, item_ids: Iterable[str] | bytes) -> np.ndarray:
        """Return the item_idx of each external item id as int64, with -1 for unknown items.

        `item_ids` are strings, or bytes joined by store.rating_index.encode_ids, which are looked
        up without decoding them.
        """
        if isinstance(item_ids, bytes):
            if self._encoded_lookup is None:
                self._encoded_lookup = EncodedIdLookup(self.item_ids)
            return self._encoded_lookup.indices(item_ids)
        index = self._item_ids_to_idx()
        return np.array([index.get(str(item_id), -1) for item_id in item_ids], dtype=np.int64)

    def user_index(self, user_id: str) -> int | None:
        """Return the user_idx of an external user id, or None when this version lacks the user."""
        if self._user_index is None:
            self._user_index = {user_id: idx for idx, user_id in enumerate(self.user_ids.tolist())}
        return self._user_index.get(str(user_id))

    def _item_ids_to_idx(self) -> dict[str, int]:
        # Built on first use: a published version never changes, so the map stays valid.
        if self._item_index is None:
            self._item_index = {item_id: idx for idx, item_id in enumerate(self.item_ids.tolist())}
        return self._item_index


class SnapshotStore:
    """The snapshot versions under one directory (normally `Settings.snapshots_dir`)."""

    def __init__(self, snapshots_dir: Path | str) -> None:
        self.snapshots_dir = Path(snapshots_dir)

    # Reading

    def versions(self) -> list[int]:
        """Return the published version numbers, ascending (an empty list when there are none)."""
        if not self.snapshots_dir.is_dir():
            return []
        found = []
        for entry in self.snapshots_dir.iterdir():
            match = VERSION_DIR.match(entry.name)
            if match and (entry / MANIFEST_FILE).is_file():
                found.append(int(match.group(1)))
        return sorted(found)

    def current_version(self) -> int | None:
        """Return the version CURRENT names, or None when nothing has been published yet."""
        path = self.snapshots_dir / CURRENT_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        try:
            return int(text)
        except ValueError:
            raise SnapshotError(f"{path}: expected a version number, got {text!r}") from None

    def open(self, version: int | None = None, verify: bool = False) -> Snapshot:
        """Open a version (default: CURRENT's) with every array memory-mapped read-only.

        Dtypes and shapes are always checked against the manifest. With `verify=True` every file's
        sha256 is checked too, which reads each file once in full. Raises SnapshotNotFoundError
        when the version does not exist and SnapshotError naming the file when a check fails.
        """
        if version is None:
            version = self.current_version()
            if version is None:
                raise SnapshotNotFoundError(
                    f"no snapshot published in {self.snapshots_dir}. Train and publish one first"
                )
        path = self.version_path(version)
        manifest_path = path / MANIFEST_FILE
        manifest = self.manifest(version)

        arrays = {}
        for name in ARRAY_DTYPES:
            entry = manifest["arrays"].get(name)
            if entry is None:
                raise SnapshotError(f"{manifest_path}: array {name!r} is missing from the manifest")
            arrays[name] = _load_array(path, entry, verify)
        for name in OPTIONAL_ARRAY_DTYPES:
            entry = manifest["arrays"].get(name)
            if entry is not None:
                arrays[name] = _load_array(path, entry, verify)

        return Snapshot(
            **arrays,
            global_mean=float(manifest["global_mean"]),
            rating_min=float(manifest["rating_min"]),
            rating_max=float(manifest["rating_max"]),
            watermark=int(manifest["watermark"]),
            ratings_generation=manifest.get("ratings_generation"),
            hyperparameters=manifest["hyperparameters"],
            metrics=manifest["metrics"],
            version=int(manifest["version"]),
            created_at=manifest["created_at"],
            path=path,
            manifest=manifest,
        )

    def _version_dirs(self) -> list[int]:
        """Return the numbers of all version directories, including any without a manifest."""
        return [
            int(match.group(1))
            for match in (VERSION_DIR.match(entry.name) for entry in self.snapshots_dir.iterdir())
            if match
        ]

    def version_path(self, version: int) -> Path:
        """Return the directory of `version` (which may not exist)."""
        return self.snapshots_dir / f"v{version:06d}"

    # Writing

    def publish(self, data: SnapshotData) -> int:
        """Write `data` as the next version, make it CURRENT and return its number.

        The next version is one above the highest published one. A temporary directory left by a
        publish that crashed is deleted first. Publishers serialise on a lock
        file, so two processes never get the same number and CURRENT never moves backwards
        between them. Raises SnapshotError when the arrays are inconsistent or not finite; nothing
        is written then.
        """
        started = time.perf_counter()
        arrays = _validated_arrays(data)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)

        fields = {
            "global_mean": float(data.global_mean),
            "rating_min": float(data.rating_min),
            "rating_max": float(data.rating_max),
            "watermark": int(data.watermark),
            "ratings_generation": data.ratings_generation,
            "hyperparameters": data.hyperparameters,
            "counts": data.counts,
            "metrics": data.metrics,
        }
        try:
            json.dumps(fields, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"manifest: hyperparameters and metrics must be plain JSON: {exc}") from None

        with self._lock():
            self._remove_leftovers()
            # os.mkdir applies the umask as for any other directory. mkdtemp would make it
            # 0700, which readers running as another user cannot open.
            tmp_dir = self.snapshots_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
            tmp_dir.mkdir()
            entries = {name: _write_array(tmp_dir, name, array) for name, array in arrays.items()}

            version = max(self._version_dirs(), default=0) + 1
            created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            manifest = {"version": version, "created_at": created_at, **fields, "arrays": entries}
            _write_file_synced(tmp_dir / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
            _fsync_dir(tmp_dir)

            # The lock makes the target name free here; rename still fails rather than replace
            # a non-empty directory if something outside the lock created it.
            os.rename(tmp_dir, self.version_path(version))
            _fsync_dir(self.snapshots_dir)
            self._write_current(version)

        log.info(
            "snapshot published version=%d seconds=%.2f path=%s",
            version,
            time.perf_counter() - started,
            self.version_path(version),
        )
        return version

    def rollback(self, version: int) -> None:
        """Point CURRENT at an existing published version (older or newer than the current one).

        Raises SnapshotNotFoundError when `version` is not published.
        """
        with self._lock():
            available = self.versions()
            if version not in available:
                raise SnapshotNotFoundError(
                    f"version: snapshot {version} not found in {self.snapshots_dir}, "
                    f"published versions are {available}"
                )
            previous = self.current_version()
            self._write_current(version)
        log.info("snapshot rolled back from=%s to=%d", previous, version)

    def manifest(self, version: int) -> dict[str, Any]:
        """Return the parsed manifest.json of a published version, without opening its arrays."""
        path = self.version_path(version) / MANIFEST_FILE
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SnapshotNotFoundError(
                f"version: snapshot {version} not found in {self.snapshots_dir}, "
                f"published versions are {self.versions()}"
            ) from None
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{path}: invalid JSON: {exc}") from None

    def restore(self, version: int) -> int:
        """Publish the model of an older version again, as the next version number.

        Versions only ever increase, so a refolded user state written against the version that
        is being replaced still counts as older than the restored model. The new manifest
        records `restored_from`. Returns the new version.
        """
        old = self.open(version, verify=True)
        data = SnapshotData(
            **{f.name: getattr(old, f.name) for f in dataclasses.fields(SnapshotData)}
        )
        data.metrics = {**old.metrics, "restored_from": version}
        new_version = self.publish(data)
        log.info("snapshot restored from=%d version=%d", version, new_version)
        return new_version

    def prune(self, keep: int) -> list[int]:
        """Delete all but the `keep` newest versions and any leftover temporary directories.

        CURRENT's version is always kept, even when it is older than the `keep` newest. Returns
        the deleted version numbers. A process that already memory-mapped a deleted version keeps
        reading it, because the files stay alive until it unmaps them.
        """
        if keep < 1:
            raise ValueError(f"keep: must be at least 1, got {keep}")
        if not self.snapshots_dir.is_dir():
            return []

        with self._lock():
            self._remove_leftovers()
            available = self.versions()
            kept = set(available[-keep:])
            current = self.current_version()
            if current is not None:
                kept.add(current)
            deleted = [version for version in available if version not in kept]
            for version in deleted:
                shutil.rmtree(self.version_path(version))

        if deleted:
            log.info("snapshots pruned deleted=%s kept=%s", deleted, sorted(kept))
        return deleted

    # Helpers

    def _remove_leftovers(self) -> None:
        """Delete the temporary directories and CURRENT files of publishes that crashed; call
        with the lock held.

        Publishers hold the lock for the whole write, so a temporary file seen while holding it
        belongs to no running publish.
        """
        for entry in self.snapshots_dir.iterdir():
            if entry.name.startswith(TMP_PREFIX) and entry.is_dir():
                shutil.rmtree(entry)
                log.info("snapshot temporary directory removed path=%s", entry)
            elif entry.name.startswith(f"{CURRENT_FILE}.tmp-") and entry.is_file():
                entry.unlink()
                log.info("snapshot temporary file removed path=%s", entry)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        with open(self.snapshots_dir / LOCK_FILE, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _write_current(self, version: int) -> None:
        """Replace CURRENT atomically: write a temporary file, fsync it, rename it over CURRENT."""
        tmp_path = self.snapshots_dir / f"{CURRENT_FILE}.tmp-{os.getpid()}"
        _write_file_synced(tmp_path, f"{version}\n".encode("ascii"))
        os.replace(tmp_path, self.snapshots_dir / CURRENT_FILE)
        _fsync_dir(self.snapshots_dir)


def _validated_arrays(data: SnapshotData) -> dict[str, np.ndarray]:
    """Convert every array to its canonical dtype and check shapes, index ranges and finiteness."""
    arrays = {name: _as_dtype(name, getattr(data, name), dtype) for name, dtype in ARRAY_DTYPES.items()}
    for name, dtype in OPTIONAL_ARRAY_DTYPES.items():
        if getattr(data, name) is not None:
            arrays[name] = _as_dtype(name, getattr(data, name), dtype)
    if not np.isfinite(data.global_mean):
        raise SnapshotError(f"global_mean: must be finite, got {data.global_mean}")
    for name in FINITE_ARRAYS:
        if name not in arrays:
            continue
        finite = np.isfinite(arrays[name])
        if not finite.all():
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise SnapshotError(
                f"{name}: must be finite, {int((~finite).sum())} values are NaN or inf "
                f"(first at index {first}), so the snapshot is rejected"
            )

    n_users, factors = _shape2(arrays, "user_factors")
    n_items, item_k = _shape2(arrays, "item_factors")
    n_genres, genre_k = _shape2(arrays, "genre_factors")
    if item_k != factors or genre_k != factors:
        raise SnapshotError(
            f"factors: user_factors, item_factors and genre_factors must have the same number of "
            f"columns, got {factors}, {item_k} and {genre_k}"
        )
    expected_lengths = {
        "user_bias": n_users,
        "user_ids": n_users,
        "seen_indptr": n_users + 1,
        "item_bias": n_items,
        "item_ids": n_items,
        "item_titles": n_items,
        "item_rating_count": n_items,
        "item_genres_indptr": n_items + 1,
        "genre_names": n_genres,
    }
    for name, length in expected_lengths.items():
        if arrays[name].ndim != 1 or len(arrays[name]) != length:
            raise SnapshotError(f"{name}: expected shape ({length},), got {arrays[name].shape}")

    _check_csr(arrays, "item_genres", n_columns=n_genres, sorted_rows=False)
    _check_csr(arrays, "seen", n_columns=n_items, sorted_rows=True)
    if "seen_ratings" in arrays and arrays["seen_ratings"].shape != arrays["seen_indices"].shape:
        raise SnapshotError(
            f"seen_ratings: expected shape {arrays['seen_indices'].shape} like seen_indices, "
            f"got {arrays['seen_ratings'].shape}"
        )
    return arrays


def _as_dtype(name: str, value: Any, dtype: str) -> np.ndarray:
    array = np.asarray(value)
    if dtype == "U":
        if array.dtype.kind not in "UO" and array.size:
            raise SnapshotError(f"{name}: expected strings, got dtype {array.dtype}")
        # Object arrays (for example from pandas) become fixed-width unicode, never pickles.
        return np.ascontiguousarray(array.astype(str))
    if array.size and array.dtype.kind not in "iuf":
        raise SnapshotError(f"{name}: expected numbers, got dtype {array.dtype}")
    if array.size and np.dtype(dtype).kind == "i" and array.dtype.kind == "f":
        raise SnapshotError(f"{name}: expected integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=dtype)


def _shape2(arrays: dict[str, np.ndarray], name: str) -> tuple[int, int]:
    if arrays[name].ndim != 2:
        raise SnapshotError(f"{name}: expected a 2-D array, got shape {arrays[name].shape}")
    rows, columns = arrays[name].shape
    return rows, columns


def _check_csr(arrays: dict[str, np.ndarray], prefix: str, n_columns: int, sorted_rows: bool) -> None:
    indptr, indices = arrays[f"{prefix}_indptr"], arrays[f"{prefix}_indices"]
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise SnapshotError(
            f"{prefix}_indptr: must start at 0, never decrease and end at "
            f"len({prefix}_indices)={len(indices)}, got first={indptr[0]} last={indptr[-1]}"
        )
    if len(indices) and (indices.min() < 0 or indices.max() >= n_columns):
        raise SnapshotError(
            f"{prefix}_indices: must lie in [0, {n_columns}), got min={indices.min()} "
            f"max={indices.max()}"
        )
    if sorted_rows and len(indices) > 1:
        # Each index must exceed the one before it, except where a new row starts.
        increasing = np.diff(indices) > 0
        row_starts = indptr[1:-1]
        row_starts = row_starts[(row_starts > 0) & (row_starts < len(indices))]
        increasing[row_starts - 1] = True
        if not increasing.all():
            position = int(np.flatnonzero(~increasing)[0]) + 1
            row = int(np.searchsorted(indptr, position, side="right")) - 1
            raise SnapshotError(
                f"{prefix}_indices: each row must be sorted ascending without duplicates, "
                f"row {row} is not"
            )


def _write_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Save `array` as <name>.npy, fsync it, and return its manifest entry."""
    path = directory / f"{name}.npy"
    with open(path, "wb") as out:
        np.save(out, array, allow_pickle=False)
        out.flush()
        os.fsync(out.fileno())
    return {
        "file": path.name,
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "sha256": _sha256(path),
    }


def _load_array(directory: Path, entry: dict[str, Any], verify: bool) -> np.ndarray:
    path = directory / entry["file"]
    if verify:
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise SnapshotError(
                f"{path}: sha256 mismatch, manifest has {entry['sha256']}, file has {digest}. "
                "The file is corrupt, so roll back to another version"
            )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: cannot load array: {exc}") from None
    if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
        raise SnapshotError(
            f"{path}: manifest has dtype {entry['dtype']} shape {entry['shape']}, "
            f"file has dtype {array.dtype.str} shape {list(array.shape)}"
        )
    return array


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_file_synced(path: Path, content: bytes) -> None:
    with open(path, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or a new file) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def model_of(snapshot: SnapshotData) -> tuple[als.ALSModel, als.ALSConfig]:
    """Return a snapshot's arrays and hyperparameters in the form the als functions take.

    The arrays stay the snapshot's own (memory-mapped and read-only for an opened version).
    """
    model = als.ALSModel(
        global_mean=snapshot.global_mean,
        user_factors=snapshot.user_factors,
        user_bias=snapshot.user_bias,
        item_factors=snapshot.item_factors,
        item_bias=snapshot.item_bias,
        genre_factors=snapshot.genre_factors,
    )
    return model, als.ALSConfig.from_stored(snapshot.hyperparameters)
