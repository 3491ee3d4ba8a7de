"""The local runner's step processes cannot outlive it: killing only the runner (kill -9 included) stops the step
it was running, so nothing registers or moves production after the runner is gone. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes and servers

RUNNER = "ml_service.pipelines.run_train_pipeline"


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killing_the_runner_stops_its_step(project, tmp_path, sig):
    root = project()  # a fixture use case; the runner starts each step as its own process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(__file__).resolve().parents[1])])}
    runs = tmp_path / "runs"
    runner = subprocess.Popen(
        [sys.executable, "-m", RUNNER, "--use-case", "toy", "--run-dir", str(runs)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (steps := children(runner.pid)):
            assert runner.poll() is None and time.monotonic() < deadline, "the runner started no step"
            time.sleep(0.01)
        os.kill(runner.pid, sig)
        runner.wait(30)
        deadline = time.monotonic() + 15
        while not all(gone(step) for step in steps):
            assert time.monotonic() < deadline, f"step process {steps} outlived its runner"
            time.sleep(0.05)
    finally:
        if runner.poll() is None:
            runner.kill()
    # the step was stopped, not left to finish: it wrote nothing (an orphan would go on to write its outputs)
    written = [p for p in runs.rglob("*") if p.is_file()] if runs.exists() else []
    assert written == []
