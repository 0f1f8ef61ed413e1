"""The ratings the consumer puts into each touched user's pending refresh.

A snapshot that stores its training ratings (`seen_ratings`) already contains every rating
written up to its watermark. An entry then needs only the user's ratings written after that watermark,
and the refresh worker adds the snapshot's row. Against 32M ratings that is one or two ratings
for a typical touched user instead of their whole history of about 160.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from store.database import Database
from store.errors import SnapshotError
from store.snapshots import SnapshotStore
from store.user_rows import UserRows

log = logging.getLogger(__name__)

# The snapshot array that lets entries carry only the newer ratings.
TRAINING_RATINGS = "seen_ratings"


class RefreshRows:
    """Reads touched users' ratings for their refresh entries, relative to the current snapshot.

    Entries carry complete ratings in five cases. `deltas` is off, because refreshes then run
    from a JSON payload in the consumer's own process. No snapshot is published. The current
    snapshot has no training ratings (an earlier release published it). Its ratings generation
    differs from the database's, because a bulk load or a new database file came after it. Or its
    watermark is above the database's last batch.
    """

    def __init__(self, database: Database, snapshots_dir: Path | str, deltas: bool = True) -> None:
        self.database = database
        self.deltas = deltas
        self._store = SnapshotStore(snapshots_dir)
        self._version: int | None = None
        self._watermark: int | None = None

    def __call__(self, user_ids: Sequence[str]) -> UserRows:
        base = self.base()
        self.database.keep_recent_after(base)
        return self.database.user_rows(user_ids, since_seq=base)

    def base(self) -> int | None:
        """Return the watermark that entries are relative to now, or None for complete ratings."""
        if not self.deltas:
            return None
        try:
            version = self._store.current_version()
            if version is not None and version != self._version:
                self._watermark = self._read_watermark(version)
                self._version = version
        except (SnapshotError, OSError) as exc:
            if self._version is not None:
                log.warning("snapshot unreadable, refresh entries carry complete ratings error=%s", exc)
            self._version = self._watermark = None
            return None
        if version is None or self._watermark is None:
            return None
        if self._watermark > self.database.current_seq():
            return None
        return self._watermark

    def _read_watermark(self, version: int) -> int | None:
        manifest = self._store.manifest(version)
        if TRAINING_RATINGS not in manifest.get("arrays", {}):
            log.info("refresh entries carry complete ratings version=%d reason=snapshot has no %s",
                     version, TRAINING_RATINGS)
            return None
        generation = self.database.ratings_generation()
        if manifest.get("ratings_generation") is None or manifest["ratings_generation"] != generation:
            log.info(
                "refresh entries carry complete ratings version=%d reason=snapshot ratings generation "
                "%s is not the database's %s (a bulk load or another database file came after it)",
                version, manifest.get("ratings_generation"), generation,
            )
            return None
        watermark = int(manifest["watermark"])
        if watermark > self.database.current_seq():
            log.warning(
                "refresh entries carry complete ratings version=%d reason=snapshot watermark %d is "
                "above the database's last batch %d", version, watermark, self.database.current_seq(),
            )
        else:
            log.info("refresh entries carry ratings newer than version=%d watermark=%d", version, watermark)
        return watermark
