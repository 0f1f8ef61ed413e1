"""Runtime settings, read from the environment (prefix STREAMREC_) and command-line options."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Data location, Redis URL and limits shared by every streamrec process."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./var"),
        description="Directory holding the DuckDB file, snapshots and exports.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STREAMREC_REDIS_URL", "REDIS_URL"),
        description="Redis server URL; unset means an in-process fakeredis (demo only).",
    )
    rating_min: float = Field(default=0.5, description="Lowest valid rating, in stars.")
    rating_max: float = Field(default=5.0, description="Highest valid rating, in stars.")
    top_n: int = Field(default=100, gt=0, description="Length of each precomputed Redis list.")
    # XREADGROUP returns what is there, up to this many, so batches only grow this large while
    # the consumer has a backlog. Then each batch pays once for its transaction and for reading
    # and enqueueing every touched user's complete ratings, however many of its events a user has.
    ingest_batch_size: int = Field(
        default=50_000, gt=0, description="Maximum events the consumer reads per XREADGROUP call."
    )
    ingest_block_ms: int = Field(
        default=50, ge=0, description="Milliseconds XREADGROUP waits for new events."
    )
    retrain_interval_seconds: float = Field(
        default=0.0, ge=0.0, description="Seconds between periodic retrains; 0 turns them off."
    )
    snapshots_kept: int = Field(
        default=5, ge=1, description="Published snapshot versions kept when pruning."
    )
    events_keep_seconds: float = Field(
        default=3600.0,
        ge=0.0,
        description="Seconds an event stays in the Redis stream once every consumer group has "
        "acknowledged it; the ingest consumer trims older ones.",
    )
    dead_letter_max_entries: int = Field(
        default=100_000, gt=0, description="Newest rejected events kept in the dead-letter stream."
    )

    @field_validator("data_dir")
    @classmethod
    def absolute_data_dir(cls, value: Path) -> Path:
        """Resolve the directory now, so child processes started elsewhere use the same one."""
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def rating_scale_ordered(self) -> "Settings":
        if not self.rating_min < self.rating_max:
            raise ValueError(
                f"rating_min: must be below rating_max, got {self.rating_min} and {self.rating_max}"
            )
        return self

    @property
    def database_path(self) -> Path:
        return self.data_dir / "streamrec.duckdb"

    @property
    def snapshots_dir(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"
