"""The current snapshot, opened once per worker process and reopened when a new version is published."""

from __future__ import annotations

import logging
import threading

from store.snapshots import Snapshot, SnapshotStore

log = logging.getLogger(__name__)

_lock = threading.Lock()
_cached: dict[str, Snapshot] = {}


def current_snapshot(snapshots_dir) -> Snapshot:
    """Return the published snapshot, reopening it only when CURRENT names another version.

    Raises SnapshotNotFoundError when nothing is published yet.
    """
    store = SnapshotStore(snapshots_dir)
    version = store.current_version()
    key = str(snapshots_dir)
    with _lock:
        snapshot = _cached.get(key)
        if snapshot is None or snapshot.version != version:
            snapshot = store.open(version)
            _cached[key] = snapshot
            log.info("snapshot loaded version=%d dir=%s", snapshot.version, snapshots_dir)
        return snapshot
