"""``make demo`` works: ``python -m testbed.demo`` run as a user runs it (a subprocess, no
stdin, CI=true) promotes the good model, rolls the bad one back, exits 0 and leaves nothing
behind (no process of its own, no temporary directory).

It starts its own control plane, Prometheus, suggestion processes and controller, so it
does not use the session's fixtures; it takes one to two minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.stack import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEADLINE = 300  # the demo's own overall deadline (its default)
TEARDOWN = 60  # after its deadline the demo tears down in seconds; this is the margin


def _run_demo(env: dict[str, str]) -> tuple[int, str]:
    """Run the demo; past its deadline (a backstop: it has its own) SIGTERM it, which tears
    down like Ctrl-C, rather than SIGKILL, which would orphan its processes."""
    with subprocess.Popen(
        [sys.executable, "-m", "testbed.demo"],  # as `make demo` runs it
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=DEADLINE + TEARDOWN)
        except subprocess.TimeoutExpired:
            proc.terminate()
            out, _ = proc.communicate(timeout=TEARDOWN)
            pytest.fail(f"the demo ran past its deadline:\n{out[-8000:]}")
        return proc.returncode, out


def _processes_using(path: str) -> list[str]:
    """Processes whose command line or environment names ``path`` (the demo's controller
    and suggestion processes do: token file, models root)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours
        if path.encode() in text:
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


@pytest.mark.timeout(DEADLINE + TEARDOWN + 30)
def test_demo_promotes_the_good_model_and_rolls_the_bad_one_back() -> None:
    env = {**os.environ, "CI": "true"}
    env.pop("MODELROLLOUT_KEEP_TESTBED", None)
    started = time.monotonic()
    returncode, out = _run_demo(env)
    seconds = time.monotonic() - started
    assert returncode == 0, out[-8000:]
    assert "PROMOTED: v2 is the stable model" in out, out[-8000:]
    assert "ROLLED BACK: bad -> all traffic on v2" in out, out[-8000:]
    assert "AnalysisFailed" in out
    assert "demo OK: v2 promoted, bad rolled back" in out
    for phase in ("Shadow", "Canary 1", "Canary 3", "Promoting", "Succeeded", "RolledBack"):
        assert phase in out, f"no {phase!r} line in the demo's output:\n{out[-8000:]}"
    workdir = re.search(r"work directory (\S+)\)", out)
    assert workdir is not None
    assert not Path(workdir.group(1)).exists(), "the demo left its temporary directory behind"
    assert _processes_using(workdir.group(1)) == [], "the demo left processes behind"
    print(f"demo wall time: {seconds:.1f} s")
