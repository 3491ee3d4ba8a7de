"""One registering process for the registry's concurrency tests: logs a tiny model and registers it with an mse,
printing the Registration as one JSON line. Real processes on a real store.

`--serve` makes a zygote: it imports MLflow once, then forks one worker per JSON command read from stdin
({"argv": [...], "env": {...}, "out": path}), writing the worker's pid to stdout, its output to `out` (and
`out`.err) and its exit code to `out`.rc. A forked worker is a process like any other (own pid, own store
connection: the zygote never opens one); it only skips the seconds of importing MLflow, which would otherwise
dominate these tests.

Gates, all files in --gates (a folder), let a test line processes up at exact points of a registration:
  <tag>.imported  written once MLflow is imported; then the worker waits for go (or <tag>.go) before connecting,
                  so several processes open a new store at the same moment.
  --hold-claim    writes <tag>.ready just before the claim that moves production, then waits for <tag>.claim.
  --stop-after-create / --kill-after-create   stop (SIGSTOP) or kill (SIGKILL) this process right after its
                  version was created (still pending), like a run paused or killed at the worst moment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

import mlflow

from ml_service.registry.mlflow_registry import connect, ensure_experiment, register_version
from ml_service.util.env_variables import load_settings


def wait_for(*paths: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {paths[0]} not opened")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", required=True)
    parser.add_argument("--mse", type=float, required=True)
    parser.add_argument("--gates", type=Path, required=True)
    parser.add_argument("--name", default="m")
    parser.add_argument("--hold-claim", action="store_true")
    parser.add_argument("--base", help="register a model set built on this production version ('' for none)")
    parser.add_argument("--stop-after-create", action="store_true")
    parser.add_argument("--kill-after-create", action="store_true")
    args = parser.parse_args(argv)
    gates = args.gates
    (gates / f"{args.tag}.imported").touch()
    wait_for(gates / "go", gates / f"{args.tag}.go")

    settings = load_settings()
    client = connect(settings)
    create, set_tag = client.create_model_version, client.set_model_version_tag

    def create_then_stop(*a, **k):
        version = create(*a, **k)
        (gates / f"{args.tag}.created.tmp").write_text(str(version.version))
        os.replace(gates / f"{args.tag}.created.tmp", gates / f"{args.tag}.created")  # seen whole or not at all
        if args.kill_after_create:
            os.kill(os.getpid(), signal.SIGKILL)
        if args.stop_after_create:
            os.kill(os.getpid(), signal.SIGSTOP)
        return version

    def held_claim(name, version, key, value):
        if key == settings.production_alias and value.isdigit():
            (gates / f"{args.tag}.ready").touch()
            wait_for(gates / f"{args.tag}.claim")
        return set_tag(name, version, key, value)

    client.create_model_version = create_then_stop
    if args.hold_claim:
        client.set_model_version_tag = held_claim

    folder = gates / f"model-{args.tag}"
    folder.mkdir()
    (folder / "MLmodel").write_text(f"# {args.tag}\n")
    with mlflow.start_run(experiment_id=ensure_experiment(client, "concurrency", settings)) as run:
        mlflow.log_artifacts(str(folder), "model")
    result = register_version(
        client,
        args.name,
        run.info.run_id,
        "model",
        {"worker": args.tag},
        settings.production_alias,
        metrics={"mse": args.mse},
        lineage={"git_tree": "unknown"},
        data_hash="h",
        folder=folder,
        **({"metric": "mse", "direction": "minimize"} if args.base is None else {"base_version": args.base}),
    )
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0


def _run_child(command: dict) -> None:
    """In the forked child: own output files, the test's environment, then the worker; never returns."""
    code = 1
    try:
        out = os.open(command["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(command["out"] + ".err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.environ.clear()
        os.environ.update(command["env"])
        code = main(command["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    # what a worker's first store connection would import: done once here, so each fork starts with it loaded
    import alembic.command  # noqa: F401
    import mlflow.store.artifact.local_artifact_repo  # noqa: F401
    import mlflow.store.db.utils  # noqa: F401
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    outputs: dict[int, str] = {}
    lock = threading.Lock()

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.02)
                continue
            with lock:
                out = outputs.pop(pid, None)
            if out is not None:
                # written whole, then renamed: the test waits for the file to exist and reads it at once
                Path(out + ".rc.tmp").write_text(str(os.waitstatus_to_exitcode(status)))
                os.replace(out + ".rc.tmp", out + ".rc")

    threading.Thread(target=reap, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        with lock:
            pid = os.fork()
            if pid == 0:
                _run_child(command)
            outputs[pid] = command["out"]
        print(pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())
