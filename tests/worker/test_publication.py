"""What happens in Redis after a version is published: rollback, resume after a crash, status."""

from __future__ import annotations

import json
import time

import pytest
from rq.registry import StartedJobRegistry

import als
from cli.main import main
from store import keys
from store.snapshots import SnapshotStore
from store.user_state import read_user_state
from worker.refresh import refresh_users
from worker.queues import retrain_queue
from worker.retrain import resume_publication, run_retrain
from worker.runner import PublicationCheck

ROWS = [(f"u{u}", str(i), float(1 + (u + i) % 5), 1000 + 10 * u + i) for u in range(8) for i in (1, 2, 3)]
FAST = als.ALSConfig(factors=3, epochs=3)


@pytest.fixture
def two_versions(tiny_catalogue, redis_client, redis_url, monkeypatch):
    catalogue = tiny_catalogue(ROWS)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STREAMREC_DATA_DIR", str(catalogue.settings.data_dir))
    run_retrain(catalogue.settings, redis_client, FAST)
    run_retrain(catalogue.settings, redis_client, FAST)
    return catalogue.settings


def test_rollback_publishes_next_version(two_versions, redis_client, capsys):
    assert main(["snapshots", "rollback", "1"]) == 0

    store = SnapshotStore(two_versions.snapshots_dir)
    assert store.versions() == [1, 2, 3]
    assert store.current_version() == 3
    assert store.manifest(3)["metrics"]["restored_from"] == 1
    assert int(redis_client.get(keys.SNAPSHOT_CURRENT)) == 3
    assert read_user_state(redis_client, "u0").version == 3
    assert "published again as version 3" in capsys.readouterr().out


def test_refresh_works_after_rollback(two_versions, redis_client):
    main(["snapshots", "rollback", "1"])
    snapshot = SnapshotStore(two_versions.snapshots_dir).open()

    written = refresh_users(redis_client, snapshot, {"u0": (["1"], [5.0])}, seq=50, top_n=5)

    assert written == 1
    state = read_user_state(redis_client, "u0")
    assert state.version == 3
    assert state.seq == 50


def test_resume_finishes_interrupted_publication(two_versions, redis_client):
    # A worker that died after publishing version 2 left Redis on version 1's lists.
    redis_client.set(keys.SNAPSHOT_LISTS_WRITTEN, 1)
    redis_client.set(keys.SNAPSHOT_CURRENT, 1)

    assert resume_publication(two_versions, redis_client) == 2
    assert int(redis_client.get(keys.SNAPSHOT_LISTS_WRITTEN)) == 2
    assert int(redis_client.get(keys.SNAPSHOT_CURRENT)) == 2
    assert resume_publication(two_versions, redis_client) is None


def test_publication_check_rewrites_lists_lost_by_redis(two_versions, redis_client):
    # A Redis restarted without persistence: every list and version key is gone.
    redis_client.flushdb()

    PublicationCheck(two_versions, redis_client, retrain_queue(redis_client))()

    assert int(redis_client.get(keys.SNAPSHOT_LISTS_WRITTEN)) == 2
    assert read_user_state(redis_client, "u0").version == 2


def test_publication_check_waits_for_a_running_retrain(two_versions, redis_client):
    redis_client.flushdb()
    queue = retrain_queue(redis_client)
    redis_client.zadd(StartedJobRegistry(queue=queue).key, {"running-retrain": time.time() + 100})

    PublicationCheck(two_versions, redis_client, queue)()

    assert redis_client.get(keys.SNAPSHOT_LISTS_WRITTEN) is None


def test_publication_check_survives_an_unreadable_snapshot(two_versions, redis_client, caplog):
    redis_client.flushdb()
    (SnapshotStore(two_versions.snapshots_dir).version_path(2) / "manifest.json").write_text("{")

    PublicationCheck(two_versions, redis_client, retrain_queue(redis_client))()

    assert "publication check failed" in caplog.text


def test_resume_leaves_lists_of_a_newer_version(two_versions, redis_client, caplog):
    # Redis contains the lists of version 3, but the data directory was restored to version 2.
    redis_client.set(keys.SNAPSHOT_LISTS_WRITTEN, 3)

    assert resume_publication(two_versions, redis_client) is None
    assert int(redis_client.get(keys.SNAPSHOT_LISTS_WRITTEN)) == 3
    assert "lists in Redis belong to version=3, newer than the current snapshot version=2" in caplog.text


def test_snapshots_list_marks_current(two_versions, capsys):
    assert main(["snapshots", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  v1 ")
    assert lines[1].startswith("* v2 ")


def test_status_json_reports_versions(two_versions, capsys):
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["current_version"] == 2
    assert report["versions"] == [1, 2]
    assert report["lists_written_for_version"] == 2
    assert report["streamrec-retrain"]["queued"] == 0
    assert report["streamrec-retrain"]["started"] == []


def test_invalid_hyperparameter_is_one_line(two_versions, capsys):
    assert main(["retrain", "--factors", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: factors: must be >= 1, got 0"


def test_version_key_never_goes_back(redis_client):
    from worker.retrain import raise_version

    raise_version(redis_client, keys.SNAPSHOT_CURRENT, 5)
    raise_version(redis_client, keys.SNAPSHOT_CURRENT, 4)
    assert int(redis_client.get(keys.SNAPSHOT_CURRENT)) == 5
    raise_version(redis_client, keys.SNAPSHOT_CURRENT, 6)
    assert int(redis_client.get(keys.SNAPSHOT_CURRENT)) == 6
