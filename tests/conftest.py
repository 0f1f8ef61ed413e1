"""Shared fixtures: a real Redis database flushed around each test, and the shipped MovieLens data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

REPO_ROOT = Path(__file__).resolve().parent.parent
MOVIELENS_SMALL = REPO_ROOT / "data" / "ml-latest-small"
SPLITS = REPO_ROOT / "data" / "splits"

# A dedicated database number, so a test run never touches data an app keeps in db 0.
TEST_REDIS_URL = os.environ.get("STREAMREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_url() -> str:
    """URL of the real test Redis database, flushed before and after the test."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {TEST_REDIS_URL}: {exc}")
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def movielens_dir() -> Path:
    return MOVIELENS_SMALL


@pytest.fixture
def splits_dir() -> Path:
    return SPLITS
