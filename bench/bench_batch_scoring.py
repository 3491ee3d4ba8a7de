"""Benchmark of batch scoring: the batch-score step on N partition models (the ff regions use case, trained and
registered first, untimed) against a bare loop that loads each model and calls `predict`.

Set-up (untimed): prepare → train → evaluate → register N models on a fresh LOCAL_DIR, then `batch_input` writes
the 48 hours after the training data (with weather) for every region, one CSV each.

Timed, in one run:
  full - `python -m ml_service.pipelines.steps.batch_score` as its own process (start-up and imports included):
         look up the production model set in the registry, plan, score every partition in a process pool
         (checked input types, at most a batch of models in memory per worker), write one Parquet file per
         worker batch atomically, combine into one Parquet, summary and report; peak memory of the process tree
         (sampled);
  bare - one process, one loop over the same files and the same downloaded models: read the CSV, unpickle the
         partition's model, predict; nothing checked, nothing written; imports done before the clock starts. Half
         runs before the full run and half after (a shared host's speed drifts).
Prints bare / full (above 1: the step is faster than the bare loop), the load average, and the CPU seconds of
each side (steadier than wall time on a shared host).

    .venv/bin/python bench/bench_batch_scoring.py --models 10000 --keep     # set-up ~5 min, then one round
    .venv/bin/python bench/bench_batch_scoring.py --work /tmp/bench-batch-XXXX --repeat 3   # the same set-up again
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_many_models import TreeMemory, bench_environment, seed_registry, step  # noqa: E402

NAME = "nyc_energy_regions_model"


def bare_loop(files: list[Path], models: Path) -> tuple[float, float, int]:
    """Read each partition's rows, load its model, predict: wall seconds, CPU seconds and rows."""
    import pandas as pd

    from ml_service.registry.mlops_pyfunc_model import key_folder

    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for path in files:
        frame = pd.read_csv(path, parse_dates=["timeStamp"])
        key = f"region={path.stem}"
        with (models / key_folder(key) / "model.pkl").open("rb") as handle:
            model = pickle.load(handle)
        rows += len(model.predict(frame[["timeStamp", "precip", "temp"]]))
    return time.perf_counter() - started, time.process_time() - cpu, rows


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and theirs (the step, its pool workers
    and its registry-lookup process: each waits for its own)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, help="partitions (default 2000, or as many as --work holds)")
    parser.add_argument("--days", type=int, default=14, help="days of training data per partition")
    parser.add_argument("--workers", type=int, default=0, help="MAX_WORKERS (0: one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--work", type=Path, help="a work folder kept by an earlier run (--keep): its set-up is reused, not redone"
    )
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds (each: bare half, step, bare half)")
    args = parser.parse_args()
    reuse = args.work is not None and (args.work / "new" / NAME).is_dir()
    if args.models is None:
        args.models = len(list((args.work / "new" / NAME).glob("*.csv"))) if reuse else 2000
    work = args.work.resolve() if reuse else Path(tempfile.mkdtemp(prefix="bench-batch-"))
    local = work / "local"
    env = bench_environment(local, args.workers)
    print(f"bench: {args.models} partition models x 48 rows, {os.cpu_count()} cores, work folder {work}", flush=True)
    data = ["--use-case", NAME, "--data-option", f"partitions={args.models}", "--data-option", f"days={args.days}"]
    prepared, trained, decisions, registered = (work / n for n in ("prepared", "trained", "evaluate", "register"))
    new_rows, out = work / "new", work / "out"
    try:
        if reuse:
            print(f"set-up reused from {work}")
        else:
            seed_registry(local)
            print("set-up (untimed):")
            step("prepare", env, *data, "--output", str(prepared))
            step("train", env, "--prepared", str(prepared), "--output", str(trained))
            step("evaluate", env, "--trained", str(trained), "--output", str(decisions))
            step("register", env, "--trained", str(trained), "--decisions", str(decisions), "--output", str(registered))
            step("batch_input", env, "--use-case", NAME, "--output", str(new_rows))
        files = sorted((new_rows / NAME).glob("*.csv"))
        if len(files) != args.models:
            sys.exit(f"batch_input wrote {len(files)} files for {args.models} partitions")

        from ml_service.registry.mlflow_registry import connect, download_data, production_model
        from ml_service.util.env_variables import load_settings

        client = connect(load_settings())
        if not (work / "bare-model").is_dir():
            download_data(client, production_model(client, NAME, "production"), work / "bare-model")
        models = next((work / "bare-model").rglob("manifest.json")).parent  # the model set's data folder
        bare_loop(files[:20], models)  # imports and first-call costs out of the clock
        half = len(files) // 2
        import pandas as pd
        import psutil

        bench_rss = psutil.Process().memory_info().rss  # this process is in the sampled tree: reported apart
        for round_ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)  # every round scores everything (no resume)
            load = os.getloadavg()[0]
            print(
                ("timed" if args.repeat == 1 else f"timed, round {round_ + 1} of {args.repeat}")
                + f" (load average {load:.1f} on {os.cpu_count()} cores, other processes included):"
            )
            first, first_cpu, rows_first = bare_loop(files[:half], models)
            cpu_before = children_cpu()
            with TreeMemory() as memory:
                full = step("batch_score", env, "--use-case", NAME, "--input", str(new_rows), "--output", str(out))
            full_cpu = children_cpu() - cpu_before
            second, second_cpu, rows_second = bare_loop(files[half:], models)
            bare, bare_cpu = first + second, first_cpu + second_cpu
            combined = pd.read_parquet(out / f"{NAME}.parquet", columns=["prediction"])
            if len(combined) != rows_first + rows_second:
                sys.exit(f"the step wrote {len(combined)} rows, the bare loop predicted {rows_first + rows_second}")
            print(f"batch-score step (own process, end to end): {full:.2f} s  ({args.models / full:.0f} partitions/s)")
            print(f"bare loop (read, unpickle, predict; nothing written): {bare:.2f} s ({args.models / bare:.0f}/s)")
            print(f"bare / full: {bare / full:.2f}x (target >= 2x on 2 cores)")
            # CPU seconds move far less than wall seconds on a shared host: what each side costs, whoever else runs
            cores = min(os.cpu_count() or 1, 2)
            print(
                f"CPU: step {full_cpu:.2f} s (all its processes), bare loop {bare_cpu:.2f} s; bare CPU / (step CPU / "
                f"{cores} cores) = {bare_cpu / (full_cpu / cores):.2f}x (the ratio on an idle host if the step "
                f"kept {cores} cores busy)"
            )
        print(
            f"peak memory of the batch-score processes (step + workers, sampled): "
            f"{(memory.peak - bench_rss) / 2**20:.0f} MB (the bench process, {bench_rss / 2**20:.0f} MB, left out); "
            f"the model set on disk {sum(p.stat().st_size for p in models.rglob('*')) / 2**20:.0f} MB"
        )
    finally:
        if args.keep or reuse:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
