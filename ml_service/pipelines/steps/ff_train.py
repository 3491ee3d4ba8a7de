"""Step (many models): train every planned model in parallel; skip those already trained on the same inputs.

Locally a process pool (or a Dask cluster when DASK_SCHEDULER_ADDRESS is set); in Azure ML the same
`train_one` runs inside a parallel job. One failing model is reported and counted against the error
threshold; the step fails only when the threshold is crossed.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from ml_service.pipelines.many_models import (
    PLOT_FILE,
    check_error_threshold,
    model_folder,
    read_plan,
    run_tasks,
)
from ml_service.pipelines.steps.common import run_step
from ml_service.pipelines.steps.ff_prepare import parser
from ml_service.util.env_variables import load_settings
from ml_service.util.files import write_atomic, write_json

SUMMARY_FILE = "train_summary.json"
METRICS_FILE = "metrics.csv"


def metrics_table(results) -> str:
    names = sorted({m for r in results for m in r.metrics})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["model_id", "status", "estimator", "seconds", *names, "error"])
    for r in results:
        writer.writerow(
            [
                r.model_id,
                r.status,
                r.estimator,
                f"{r.seconds:.4f}",
                *(r.metrics.get(n, "") for n in names),
                r.error,
            ]
        )
    return out.getvalue()


def tracking_experiment() -> str:
    """Connect to the tracking store and return the ff experiment's id (importing MLflow takes seconds)."""
    from ml_service.registry.mlflow_registry import connect, ensure_experiment

    settings = load_settings()
    return ensure_experiment(connect(settings), "ff", settings)


def log_training_runs(results, trained_dir: Path, experiment_id: str) -> dict[str, str]:
    """One MLflow run per use case: counts, mean metrics, the per-model table and the hold-out plots."""
    import mlflow

    runs = {}
    for name in sorted({r.model_name for r in results}):
        own = [r for r in results if r.model_name == name]
        counts = Counter(r.status for r in own)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-train") as run:
            mlflow.set_tags({"model_name": name, "step": "ff_train"})
            mlflow.log_metrics({f"models_{status}": n for status, n in counts.items()})
            ok = [r for r in own if r.status != "failed"]
            for metric in sorted({m for r in ok for m in r.metrics}):
                values = [r.metrics[metric] for r in ok if metric in r.metrics]
                mlflow.log_metric(f"mean_{metric}" if len(own) > 1 else metric, sum(values) / len(values))
            mlflow.log_text(metrics_table(own), f"{name}/{METRICS_FILE}")
            for r in ok:
                plot = model_folder(trained_dir, r.model_id) / PLOT_FILE
                if plot.exists():
                    mlflow.log_artifact(str(plot), f"{name}/plots/{r.key or 'model'}")
        runs[name] = run.info.run_id
    return runs


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--prepared", type=Path, required=True, help="input: ff_prepare output")
    cli.add_argument("--output", type=Path, required=True, help="output folder: trained models")
    cli.add_argument("--error-threshold", type=int, help="failed models tolerated (-1: any); default from config")
    args = cli.parse_args(argv)

    def body() -> None:
        from ff.config import load_pipeline_config

        config = load_pipeline_config(args.config)
        threshold = args.error_threshold if args.error_threshold is not None else config.parallel.error_threshold
        settings = load_settings()
        tasks = read_plan(args.prepared)
        where = (
            f"Dask at {settings.dask_scheduler_address}"
            if settings.dask_scheduler_address
            else (f"{settings.workers} process(es)")
        )
        print(f"ff_train: {len(tasks)} model(s) on {where}", flush=True)
        experiment: list[str] = []
        with tqdm(total=len(tasks), unit="model", desc="ff_train", disable=None, file=sys.stderr) as bar:
            results = run_tasks(
                tasks,
                args.prepared,
                args.output,
                args.config,
                settings.workers,
                settings.dask_scheduler_address,
                bar.update,
                meanwhile=lambda: experiment.append(tracking_experiment()),
            )
        runs = log_training_runs(results, args.output, experiment[0])
        write_json(args.output / SUMMARY_FILE, {"results": [asdict(r) for r in results], "runs": runs})
        write_atomic(args.output / METRICS_FILE, metrics_table(results).encode())
        counts = Counter(r.status for r in results)
        done = f"{counts['trained']} trained, {counts['skipped']} unchanged (skipped)"
        print(f"ff_train: {done}, {counts['failed']} failed")
        for r in results:
            if r.status == "failed":
                print(f"ff_train: FAILED {r.model_id}: {r.error}", file=sys.stderr)
        check_error_threshold(results, threshold)

    return run_step("ff_train", body)


if __name__ == "__main__":
    sys.exit(main())
