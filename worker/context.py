"""Settings of the current worker process, set once at start and read by every job it runs.

Jobs cannot take the settings as an argument (job arguments are JSON written by other
processes), and reading the environment in each job would ignore options such as --data-dir.
"""

from __future__ import annotations

from store.settings import Settings

_settings: Settings | None = None


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def current_settings() -> Settings:
    """Return the configured settings, or the environment's when the process configured none."""
    return _settings if _settings is not None else Settings()
