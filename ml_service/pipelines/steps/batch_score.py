"""Step: score new rows with every production model of the given use cases, one partition at a time, in parallel.

Input: a folder of CSV files (`<input>/<use case>/` per use case when several; one file per partition, named by
its key or holding the partition columns), or one file with the partition columns. Output:
`<output>/<use case>/batch-*.parquet`, one file per worker batch of partitions (the input rows with the partition
columns, `prediction`, `model_name`, `model_version`; its metadata lists the partitions it holds),
`<output>/<use case>.parquet` (all of them, in partition order) and `batch_summary.json`. Locally a process pool
(Dask when DASK_SCHEDULER_ADDRESS is set); a rerun skips partitions already scored from the same rows by the same
model.

`--stage` runs one stage of it, as the Azure ML batch pipeline does: plan (download models, split the input),
score (locally; in Azure ML a parallel job), combine.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ml_service.config import select_use_cases
from ml_service.fanout import fan_out
from ml_service.pipelines.batch import (
    PLAN_FILE,
    SUMMARY_FILE,
    BatchPlan,
    BatchResult,
    combine,
    combined_file,
    finished,
    plan_batch,
    results_from_files,
    score_batch,
    scored_partitions,
    summary,
    summary_json,
    tidy,
)
from ml_service.pipelines.batch_report import REPORT_FILE, write_batch_report
from ml_service.pipelines.steps.common import root, run_step
from ml_service.pipelines.training import TooManyFailures
from ml_service.use_case import load_use_case
from ml_service.util.env_variables import load_settings
from ml_service.util.files import write_atomic

STAGES = ("all", "plan", "score", "combine")
WORK_FOLDER = ".batch"  # inside --output when --partitions/--models are not given


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m ml_service.pipelines.steps.batch_score",
        description=__doc__.strip().splitlines()[0],
        epilog="Example: --use-case NAME --input local/batch/input --output local/batch/output",
    )
    cli.add_argument("--use-case", help="declared use case(s) or group(s), comma-separated")
    cli.add_argument("--all", action="store_true", help="every declared use case")
    cli.add_argument("--input", type=Path, help="folder or CSV file of new rows (plan stage)")
    cli.add_argument("--output", type=Path, help="output folder: predictions, combined files, summary")
    cli.add_argument("--model-version", help="score with this registered version instead of production")
    cli.add_argument("--error-threshold", type=int, help="failed partitions tolerated per use case (-1: any)")
    cli.add_argument("--stage", choices=STAGES, default="all", help="one stage only (Azure ML runs them apart)")
    cli.add_argument("--partitions", type=Path, help="work folder: the new rows split per partition, and the plan")
    cli.add_argument("--models", type=Path, help="work folder: the downloaded model data folders")
    cli.add_argument("--scored", type=Path, help="combine stage: the folder the score stage wrote (default: --output)")
    return cli


def threshold_failures(results: list[BatchResult], names: list[str], override: int | None) -> list[str]:
    """Use cases with more failed partitions than their error threshold allows, each as one line."""
    problems = []
    for name in names:
        own = [r for r in results if r.use_case == name]
        failed = [r for r in own if r.status == "failed"]
        limit = override if override is not None else load_use_case(name, root()).config.parallel.error_threshold
        if limit >= 0 and len(failed) > limit:
            problems.append(f"{name}: {len(failed)} of {len(own)} partitions failed, error threshold {limit}")
    return problems


def report(results: list[BatchResult], names: list[str], seconds: float) -> None:
    for name in names:
        own = [r for r in results if r.use_case == name]
        counts = Counter(r.status for r in own)
        rows = sum(r.rows for r in own)
        print(
            f"batch-score: {name}: {counts['scored']} scored, {counts['skipped']} already scored (skipped), "
            f"{counts['failed']} failed, {rows} rows"
        )
        for r in own:
            if r.status == "failed":
                print(f"batch-score: FAILED {name} {r.key or '(single model)'}: {r.error}", file=sys.stderr)
    print(f"batch-score: {len(results)} partition(s) in {seconds:.1f} s")


def finish(plan: BatchPlan, results: list[BatchResult], scored: Path, output: Path, override: int | None, started):
    """Combine each use case within its error threshold, write the summary, fail naming the use cases over it."""
    names = list(dict.fromkeys([*plan.versions, *(r.use_case for r in results)]))
    over = threshold_failures(results, names, override)
    over_names = {line.split(":", 1)[0] for line in over}
    combined = {}
    for name in names:
        keys = [r.key for r in results if r.use_case == name and r.status in ("scored", "skipped")]
        places = finished(scored_partitions(scored, name), [t for t in plan.tasks if t.use_case == name])
        if scored == output:  # locally: the folder keeps only this run's predictions, each partition once
            places = tidy(scored, name, {key: places[key] for key in keys if key in places})
        if name in over_names or not keys:
            # no combined file for it, not even an earlier run's: the folder now holds this run's predictions
            combined_file(output, name).unlink(missing_ok=True)
            continue
        # Azure ML: the combined files go to the combine step's own output, not into the score step's
        path = combined_file(output, name)
        rows = combine(keys, places, path)
        combined[name] = {"file": str(path), "rows": rows}
    seconds = time.perf_counter() - started
    record = {**summary(results, seconds), "combined": combined, "versions": plan.versions}
    write_atomic(output / SUMMARY_FILE, summary_json(record))
    configs = {name: load_use_case(name, root()).config for name in names}
    page = write_batch_report(output / REPORT_FILE, record, configs, combined)
    report(results, names, seconds)
    print(f"batch-score: report {page}")
    if over:
        raise TooManyFailures("; ".join(over))


def _preload(plan: BatchPlan, project: Path) -> None:
    import pyarrow.parquet  # noqa: F401

    for name in dict.fromkeys(t.use_case for t in plan.tasks):
        load_use_case(name, project)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> None:
        started = time.perf_counter()
        project = root()
        if args.stage in ("all", "score", "combine") and args.output is None:
            raise ValueError("--output is required (the folder the predictions go to)")
        work = (args.output or Path(".")) / WORK_FOLDER
        partitions = args.partitions or work / "partitions"
        models = args.models or work / "models"
        if args.stage in ("all", "plan"):
            if args.input is None:
                raise ValueError("--input is required: a folder or CSV file of new rows")
            names = select_use_cases(args.use_case, project, args.all)
            plan = plan_batch(
                names, project, args.input, partitions, models, args.model_version, copy=args.stage == "plan"
            )
            plan.write(partitions)
            missing = [n for n, v in plan.versions.items() if not v]
            for name in missing:
                print(f"batch-score: {name}: no production model (train it first)", file=sys.stderr)
            print(f"batch-score: planned {len(plan.tasks)} partition(s) of {', '.join(names)} in {partitions}")
            if args.stage == "plan":
                return
        else:
            if not (partitions / PLAN_FILE).is_file():
                raise FileNotFoundError(f"{partitions / PLAN_FILE} not found: run the plan stage first (--partitions)")
            plan = BatchPlan.read(partitions)
        if args.stage == "combine":
            scored = args.scored or args.output
            finish(plan, results_from_files(plan, scored), scored, args.output, args.error_threshold, started)
            return
        settings = load_settings()
        where = (
            f"Dask at {settings.dask_scheduler_address}"
            if settings.dask_scheduler_address
            else (f"{settings.workers} process(es)")
        )
        output = args.output.resolve()
        done: dict[int, BatchResult] = {}
        for name in dict.fromkeys(t.use_case for t in plan.tasks):
            own = [(i, t) for i, t in enumerate(plan.tasks) if t.use_case == name]
            places = finished(scored_partitions(output, name), [t for _, t in own])
            for i, task in own:
                if task.key in places:
                    done[i] = BatchResult(name, task.key, "skipped", places[task.key].rows, task.model_version)
        todo = [t for i, t in enumerate(plan.tasks) if i not in done]
        print(
            f"batch-score: scoring {len(todo)} partition(s) on {where}"
            + (f" ({len(done)} already scored)" if done else ""),
            flush=True,
        )
        work_function = functools.partial(
            score_batch,
            partitions_dir=partitions.resolve(),
            models_dir=models.resolve(),
            output=output,
            root=project,
        )
        with tqdm(total=len(plan.tasks), unit="partition", desc="batch-score", disable=None, file=sys.stderr) as bar:
            bar.update(len(done))
            scored = fan_out(
                work_function,
                todo,
                workers=settings.workers,
                dask_scheduler_address=settings.dask_scheduler_address,
                on_progress=bar.update,
                # workers forked after the use cases' code and pyarrow are imported start scoring at once
                preload=lambda: _preload(plan, project),
            )
        fresh = iter(scored)
        results = [done[i] if i in done else next(fresh) for i in range(len(plan.tasks))]
        finish(plan, [*plan.failed, *results], output, output, args.error_threshold, started)

    return run_step("batch-score", body)


if __name__ == "__main__":
    sys.exit(main())
