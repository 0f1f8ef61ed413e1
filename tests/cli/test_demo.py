"""The demo, run as a user runs it: `streamrec demo` in a fresh directory, without Redis."""

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_shows_every_step(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "STREAMREC_REDIS_URL")}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "--data-dir", str(tmp_path), "demo"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for heading in ("1. Load", "2. User", "3. Stream", "4. A new visitor", "5. An operator retrain", "6. RMSE"):
        assert f"=== {heading}" in out, out
    assert "published version 1" in out
    assert "published version 2: 100,836 ratings" in out
    assert "dead-lettered: 0" in out
    changed = re.search(r"^(\d+) of 10 recommendations changed", out, re.MULTILINE)
    assert changed is not None, out
    assert int(changed.group(1)) > 0, out
    family = re.search(
        r"^(\d+) of 10 carry the Children or Animation genre \((\d+) of 10 in the list for a "
        r"visitor with no ratings\)", out, re.MULTILINE,
    )
    assert family is not None, out
    assert int(family.group(1)) >= 6, out
    assert int(family.group(1)) > int(family.group(2)), out
