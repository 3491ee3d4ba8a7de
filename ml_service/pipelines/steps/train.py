"""Step: train every planned model, in parallel, skipping those already trained on the same data, config and code.

Locally a process pool (or a Dask cluster when DASK_SCHEDULER_ADDRESS is set); in Azure ML the same
`train_batch` runs inside a parallel job. One failing model is reported and counted against its use case's
error threshold; the step fails only when a threshold is crossed. One MLflow run per use case records it.
"""

from __future__ import annotations

import csv
import functools
import io
import sys
from collections import Counter
from dataclasses import asdict

from tqdm import tqdm

from ml_service.fanout import fan_out
from ml_service.pipelines.steps.common import root, run_step, step_parser
from ml_service.pipelines.training import (
    SUMMARY_FILE,
    ModelResult,
    check_error_threshold,
    read_plan,
    remove_stale_staging,
    train_batch,
)
from ml_service.use_case import load_use_case
from ml_service.util.env_variables import load_settings
from ml_service.util.files import write_atomic, write_json

METRICS_FILE = "metrics.csv"


def metrics_table(results: list[ModelResult]) -> str:
    names = sorted({m for r in results for m in r.metrics})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model_id", "status", "estimator", "seconds", *names, "error"])
    for r in results:
        writer.writerow(
            [r.model_id, r.status, r.estimator, f"{r.seconds:.4f}", *(r.metrics.get(n, "") for n in names), r.error]
        )
    return out.getvalue()


def tracking_experiments(names: list[str]) -> dict[str, str]:
    """Connect to the tracking store and return each use case's experiment id (importing MLflow takes seconds,
    so this runs while the workers train)."""
    from ml_service.registry.mlflow_registry import connect, ensure_experiment

    settings = load_settings()
    client = connect(settings)
    return {name: ensure_experiment(client, name, settings) for name in names}


def log_training_runs(results: list[ModelResult], experiments: dict[str, str]) -> dict[str, str]:
    """One MLflow run per use case: counts, metrics (mean over its models when partitioned), the model table."""
    import mlflow

    runs = {}
    for name in sorted({r.use_case for r in results}):
        own = [r for r in results if r.use_case == name]
        counts = Counter(r.status for r in own)
        with mlflow.start_run(experiment_id=experiments[name], run_name=f"{name}-train") as run:
            mlflow.set_tags({"use_case": name, "model_name": own[0].model_name, "step": "train"})
            mlflow.log_metrics({f"models_{status}": n for status, n in counts.items()})
            ok = [r for r in own if r.status != "failed"]
            for metric in sorted({m for r in ok for m in r.metrics}):
                values = [r.metrics[metric] for r in ok if metric in r.metrics]
                mlflow.log_metric(f"mean_{metric}" if len(own) > 1 else metric, sum(values) / len(values))
            mlflow.log_text(metrics_table(own), METRICS_FILE)
        runs[name] = run.info.run_id
    return runs


def main(argv: list[str] | None = None) -> int:
    cli = step_parser(__doc__, inputs=["prepared"])
    cli.add_argument("--error-threshold", type=int, help="failed models tolerated per use case (-1: any)")
    args = cli.parse_args(argv)

    def body() -> None:
        project = root()
        settings = load_settings()
        tasks = read_plan(args.prepared)
        names = list(dict.fromkeys(t.use_case for t in tasks))
        use_cases = {name: load_use_case(name, project) for name in names}
        where = (
            f"Dask at {settings.dask_scheduler_address}"
            if settings.dask_scheduler_address
            else (f"{settings.workers} process(es)")
        )
        print(f"train: {len(tasks)} model(s) of {', '.join(names)} on {where}", flush=True)
        remove_stale_staging(args.output)
        experiments: dict[str, str] = {}
        work = functools.partial(
            train_batch, prepared_dir=args.prepared.resolve(), trained_dir=args.output.resolve(), root=project
        )
        retries = max((u.config.parallel.retries for u in use_cases.values()), default=0)
        with tqdm(total=len(tasks), unit="model", desc="train", disable=None, file=sys.stderr) as bar:
            results = fan_out(
                work,
                tasks,
                workers=settings.workers,
                dask_scheduler_address=settings.dask_scheduler_address,
                retries=retries,
                on_progress=bar.update,
                meanwhile=lambda: experiments.update(tracking_experiments(names)),
            )
        runs = log_training_runs(results, experiments) if results else {}
        write_json(args.output / SUMMARY_FILE, {"results": [asdict(r) for r in results], "runs": runs})
        write_atomic(args.output / METRICS_FILE, metrics_table(results).encode())
        for name in names:
            own = [r for r in results if r.use_case == name]
            counts = Counter(r.status for r in own)
            done = f"{counts['trained']} trained, {counts['skipped']} unchanged (skipped), {counts['failed']} failed"
            print(f"train: {name}: {done}")
            for r in own:
                if r.status == "failed":
                    print(f"train: FAILED {r.model_id}: {r.error}", file=sys.stderr)
        for name in names:
            threshold = use_cases[name].config.parallel.error_threshold
            own = [r for r in results if r.use_case == name]
            check_error_threshold(own, args.error_threshold if args.error_threshold is not None else threshold)

    return run_step("train", body)


if __name__ == "__main__":
    sys.exit(main())
