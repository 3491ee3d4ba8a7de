"""Run a training pipeline locally: each step as its own process, in order, outputs in a run folder.

These are the same `python -m` commands the Azure ML pipeline runs, with local paths instead of job inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ml_service.config import ConfigError, project_root, select_use_cases
from ml_service.pipelines.definition import PIPELINE_INPUT, PipelineSpec, training_pipeline
from ml_service.pipelines.steps.register import REPORT_FILE
from ml_service.util.env_variables import SettingsError, load_settings
from ml_service.util.files import write_atomic


class StepFailed(RuntimeError):
    def __init__(self, step: str, returncode: int):
        super().__init__(f"step '{step}' failed with exit code {returncode}")
        self.step = step


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with(parent: int) -> None:
    """In the step's process before it starts (Linux): the kernel kills it when the runner dies, even by kill -9.
    If the runner is already gone, the step must not run on as an orphan."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # the interrupt the runner sends must reach the step even when this runner was started with SIGINT ignored
    # (an ignored signal stays ignored across exec; a step that ignored it would run on and write its outputs)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if os.getppid() != parent:
        os._exit(1)


def run_step_process(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run one step as a child that cannot outlive the runner: it dies with the runner (PR_SET_PDEATHSIG), and it
    leads its own process group, so when the runner stops (Ctrl-C, SIGTERM, an error) it stops the step and every
    process the step started."""
    runner = os.getpid()
    process = subprocess.Popen(command, cwd=cwd, env=env, process_group=0, preexec_fn=lambda: _die_with(runner))
    try:
        return process.wait()
    except BaseException:
        # SIGINT first, so a step unwinds (a registration deletes its half-made version), then SIGKILL
        for sig, grace_s in ((signal.SIGINT, 5.0), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        raise


def run_pipeline(
    spec: PipelineSpec,
    run_dir: Path,
    inputs: dict[str, str] | None = None,
    project_root: Path = Path("."),
    in_process: bool = False,
) -> dict[str, dict[str, Path]]:
    """Execute every step; return each step's output folders. Raises StepFailed naming the first failing one.

    Each step runs as its own process, as in the cloud. `in_process` calls the same `main(argv)` in this
    process instead: it saves the interpreter start-up and imports per step (tests, quick iterations).
    """
    values = {**spec.inputs, **(inputs or {})}
    outputs: dict[str, dict[str, Path]] = {}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(project_root.resolve()), os.environ.get("PYTHONPATH")])),
    }
    print(f"pipeline {spec.name}: {len(spec.steps)} steps, outputs in {run_dir}", flush=True)
    for number, step in enumerate(spec.steps, start=1):
        step_inputs = {
            key: values[b.name] if b.source == PIPELINE_INPUT else str(outputs[b.source][b.name])
            for key, b in step.inputs.items()
        }
        step_outputs = {name: run_dir / step.name / name for name in step.outputs}
        for folder in step_outputs.values():
            folder.mkdir(parents=True, exist_ok=True)
        arguments = step.arguments(step_inputs, {k: str(v) for k, v in step_outputs.items()})
        print(f"[{number}/{len(spec.steps)}] {step.name}: {step.description}", flush=True)
        started = time.monotonic()
        if in_process:
            returncode = importlib.import_module(step.module).main(arguments)
        else:
            command = [sys.executable, "-m", step.module, *arguments]
            returncode = run_step_process(command, project_root, env)
        if returncode != 0:
            raise StepFailed(step.name, returncode)
        print(
            f"[{number}/{len(spec.steps)}] {step.name}: done in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        outputs[step.name] = step_outputs
    return outputs


def keep_report(run_dir: Path, started: datetime) -> Path | None:
    """Copy this run's report into `<pipeline>/history/` and rewrite the history's index (newest first): the run
    folder (`current/`) is reused so reruns resume, the history keeps every run's report."""
    report = run_dir / "register" / "output" / REPORT_FILE
    if not report.is_file():
        return None
    history = run_dir.parent / "history"
    history.mkdir(parents=True, exist_ok=True)
    # microseconds: two quick runs in one second keep two reports
    shutil.copyfile(report, history / f"{started.strftime('%Y%m%dT%H%M%S%fZ')}.html")
    links = "".join(f'<li><a href="{p.name}">{p.stem}</a></li>' for p in sorted(history.glob("2*.html"), reverse=True))
    page = f"<!doctype html><meta charset='utf-8'><title>Run history</title><h1>Run history</h1><ul>{links}</ul>"
    write_atomic(history / "index.html", page.encode())
    return history / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", help="declared use case(s) to train, comma-separated")
    parser.add_argument("--all", action="store_true", help="every use case declared in pyproject.toml")
    parser.add_argument("--run-dir", type=Path, help="folder for step outputs (default: local/runs/<name>/current)")
    parser.add_argument(
        "--in-process", action="store_true", help="run the steps in this process instead of one process each"
    )
    parser.add_argument(
        "--retrain-from",
        type=Path,
        help="the monitor step's retrain.json: train only the models it selects (of --use-case; default: all)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        project = project_root(settings.project_root)
        if args.retrain_from:
            from ml_service.pipelines.steps.prepare import read_selection

            wanted = select_use_cases(args.use_case, project, everything=not args.use_case)
            names = list(read_selection(args.retrain_from, wanted))
            label = "retrain"
            spec = training_pipeline(names, label, str(args.retrain_from.resolve()))
        else:
            names = select_use_cases(args.use_case, project, args.all)
            label = "all" if args.all else "-".join(n.strip() for n in args.use_case.split(",") if n.strip())
            spec = training_pipeline(names, label)
    except (SettingsError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    # one stable folder, so a rerun after an interruption resumes instead of starting over
    run_dir = args.run_dir or settings.local_path / "runs" / label / "current"
    started = datetime.now(UTC)
    try:
        run_pipeline(spec, run_dir, None, project, args.in_process)
    except StepFailed as exc:
        print(f"error: pipeline {spec.name}: {exc}", file=sys.stderr)
        return 1
    history = keep_report(run_dir, started)
    print(f"pipeline {spec.name}: succeeded; registry at {settings.tracking_uri}")
    if history:
        print(f"pipeline {spec.name}: report {(run_dir / 'register' / 'output' / REPORT_FILE).resolve()}")
    return 0


if __name__ == "__main__":
    # SIGTERM (a CI job cancelled) unwinds like Ctrl-C, so the running step's process group is stopped too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
