"""scripts/test.sh's throwaway redis-server: it must start, and nothing of it may outlive the run.

Each test runs a copy of the scripts whose venv.sh installs nothing and whose .venv/bin/python is
the running interpreter, so the script runs an inner pytest on one small test file.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

# The inner test writes the process id and port of the server it reached, then passes, fails or
# sleeps.
INNER_TEST = '''
import os, pathlib, time, redis

def test_inner():
    client = redis.Redis.from_url(os.environ["STREAMREC_TEST_REDIS_URL"])
    info = client.info("server")
    pathlib.Path(os.environ["INNER_PID_FILE"]).write_text(f"{info['process_id']} {info['tcp_port']}")
    if os.environ["INNER_OUTCOME"] == "sleep":
        time.sleep(60)
    assert os.environ["INNER_OUTCOME"] == "pass"
'''


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with test.sh, a venv.sh that installs nothing, and one inner test file."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for script in (REPO_ROOT / "scripts").glob("*.sh"):
        if script.name != "venv.sh":
            shutil.copy(script, root / "scripts" / script.name)
    (root / "scripts" / "venv.sh").write_text("# installs nothing in these tests\n")
    (root / ".venv" / "bin").mkdir(parents=True)
    # A wrapper, not a symlink: a symlink outside the venv would start Python without its packages.
    python = root / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    (root / "test_inner.py").write_text(INNER_TEST)
    (tmp_path / "tmp").mkdir()
    return root


def script_env(repo: Path, inner: str, path_prefix: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "STREAMREC_TEST_REDIS_URL"}
    env.update(INNER_OUTCOME=inner, INNER_PID_FILE=str(repo / "server.pid"), TMPDIR=str(repo.parent / "tmp"))
    env["PYTHONPATH"] = str(REPO_ROOT)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return env


def start_script(repo: Path, env: dict[str, str]) -> subprocess.Popen:
    # A session of its own with SIGINT at its default, as in a terminal: a background job of a
    # non-interactive shell would ignore SIGINT.
    return subprocess.Popen(
        ["bash", "scripts/test.sh", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=repo, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def assert_server_gone(repo: Path) -> None:
    """Assert that the server has stopped and left no file in TMPDIR or /tmp."""
    pid, port = map(int, (repo / "server.pid").read_text().split())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        os.kill(pid, signal.SIGTERM)
        pytest.fail(f"redis-server pid={pid} still runs after test.sh exited")
    assert list((repo.parent / "tmp").iterdir()) == []
    assert list(Path("/tmp").glob(f"streamrec-test-redis-{port}.*")) == []


@pytest.mark.parametrize(("inner", "expected_status"), [("pass", 0), ("fail", 1)])
def test_script_stops_its_server(repo, inner, expected_status):
    process = start_script(repo, script_env(repo, inner))
    output, _ = process.communicate(timeout=60)

    assert process.returncode == expected_status, output.decode()
    assert_server_gone(repo)


def test_script_stops_its_server_on_sigint(repo):
    process = start_script(repo, script_env(repo, "sleep"))
    for _ in range(100):
        if (repo / "server.pid").exists():
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)

    assert process.returncode != 0, output.decode()
    assert_server_gone(repo)


def test_script_fails_when_server_does_not_start(repo, tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    # As a daemonizing redis-server does when its child fails to bind: the command succeeds.
    (shim / "redis-server").write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 0\n")
    (shim / "redis-server").chmod(0o755)
    process = start_script(repo, script_env(repo, "pass", path_prefix=shim))
    output, _ = process.communicate(timeout=60)

    assert process.returncode != 0, output.decode()
    assert b"did not respond" in output
    assert not (repo / "server.pid").exists()
