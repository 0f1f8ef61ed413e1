"""docker-compose.yml cannot run here (no Docker engine), so its service commands are checked
against the real `streamrec` parser instead."""

import re

import pytest

from cli.main import build_parser
from tests.conftest import REPO_ROOT


def compose_commands() -> dict[str, list[str]]:
    """Each service's `command:` list, read without a YAML library (the file uses one form)."""
    commands = {}
    service = None
    for line in (REPO_ROOT / "docker-compose.yml").read_text().splitlines():
        header = re.match(r"^  ([a-z][a-z0-9-]*):\s*$", line)
        if header:
            service = header.group(1)
        command = re.match(r'^\s+command:\s*\[(.*)\]\s*$', line)
        if command and service:
            commands[service] = re.findall(r'"([^"]*)"', command.group(1))
    return commands


def test_compose_has_the_three_processes():
    commands = compose_commands()
    assert {"redis", "ingest", "worker-refresh", "worker-retrain"} <= set(commands)


@pytest.mark.parametrize("service", ["ingest", "worker-refresh", "worker-retrain"])
def test_compose_command_parses(service):
    command = compose_commands()[service]
    assert command[0] == "streamrec"
    args = build_parser(command[1:]).parse_args(command[1:])
    assert callable(args.handler)


def test_compose_redis_appends_to_disk():
    command = compose_commands()["redis"]
    assert command[command.index("--appendonly") + 1] == "yes"


def test_compose_keeps_the_numba_cache_on_a_volume():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    cache_dir = re.search(r"^ENV NUMBA_CACHE_DIR=(\S+)$", dockerfile, re.MULTILINE).group(1)
    compose = (REPO_ROOT / "docker-compose.yml").read_text()

    assert re.search(rf"^    - numba-cache:{re.escape(cache_dir)}$", compose, re.MULTILINE)
    assert re.search(r"^  numba-cache:$", compose, re.MULTILINE)
