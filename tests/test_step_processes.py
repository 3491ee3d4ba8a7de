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
@pytest.mark.parametrize(
    ("sig", "ignoring_sigint"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["kill-9", "sigterm", "sigterm, runner started with SIGINT ignored"],
)
def test_killing_the_runner_stops_its_step(project, tmp_path, sig, ignoring_sigint):
    """`ignoring_sigint`: the runner inherits SIGINT ignored (nohup, some CI agents, a parent that ignores it): the
    ignored disposition would pass on to the step through exec, and the runner's interrupt would not stop it."""
    root = project()  # a fixture use case; the runner starts each step as its own process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(__file__).resolve().parents[1])])}
    runs = tmp_path / "runs"
    runner = subprocess.Popen(
        [sys.executable, "-m", RUNNER, "--use-case", "toy", "--run-dir", str(runs)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignoring_sigint else None,
    )
    try:
        deadline = time.monotonic() + 60
        while not (steps := children(runner.pid)):
            assert runner.poll() is None and time.monotonic() < deadline, "the runner started no step"
            time.sleep(0.01)
        if ignoring_sigint:  # once the step runs its own program, SIGINT must not be among what it ignores
            while b"ml_service.pipelines.steps" not in Path(f"/proc/{steps[0]}/cmdline").read_bytes():
                assert time.monotonic() < deadline, "the step never started"
                time.sleep(0.01)
            ignored = int(Path(f"/proc/{steps[0]}/status").read_text().split("SigIgn:")[1].split()[0], 16)
            assert not ignored & (1 << (signal.SIGINT - 1)), "the step inherited SIGINT ignored"
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
