from pathlib import Path

import pytest
from pydantic import ValidationError

from store.settings import Settings


def test_data_dir_resolved_to_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("relative/dir"))
    assert settings.data_dir == tmp_path / "relative" / "dir"
    assert settings.database_path == tmp_path / "relative" / "dir" / "streamrec.duckdb"


def test_redis_url_read_from_either_variable(monkeypatch):
    monkeypatch.delenv("STREAMREC_REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/2")
    assert Settings().redis_url == "redis://127.0.0.1:1/2"
    monkeypatch.setenv("STREAMREC_REDIS_URL", "redis://127.0.0.1:1/3")
    assert Settings().redis_url == "redis://127.0.0.1:1/3"


def test_invalid_setting_names_field(monkeypatch):
    monkeypatch.setenv("STREAMREC_TOP_N", "0")
    with pytest.raises(ValidationError, match="top_n"):
        Settings()


def test_rating_scale_must_be_ordered():
    with pytest.raises(ValidationError, match="rating_min: must be below rating_max"):
        Settings(rating_min=5.0, rating_max=1.0)
