"""Step: drift and decay of every production model, from what the scoring service collected; what to retrain.

Reads the collected requests (`--collected`: the service's JSONL files, or the files Azure ML's data collector
writes), the production version of each use case from the registry (every model's training profile travels
inside it) and, when given, actuals (`--actuals`: `<use case>.csv|.parquet` or a `<use case>/` folder of them,
with the label and the join keys: partition columns and time column for a time series, else `request_id` and
`row`). Writes `monitor.json` (per use case, per model: drift per column, decay, status, reason), `retrain.json`
(`{use case: [partition keys]}`, "" for a single model; give it to `run_train_pipeline --retrain-from`) and
`report.html`. Drift is a result, not a failure: the exit code is 0 unless the arguments or settings are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_service.config import select_use_cases
from ml_service.pipelines.steps.common import root, run_step

MONITOR_FILE = "monitor.json"
RETRAIN_FILE = "retrain.json"
REPORT_FILE = "report.html"
MODELS_FOLDER = ".models"  # inside --output: production data folders copied from a remote registry


class RetrainFileError(ValueError):
    """A retrain file that is not what this step writes; the message names the file and what is wrong."""


def read_retrain(path: Path) -> dict[str, list[str]]:
    """retrain.json, as this step writes it: `{"<use case>": ["<partition key>", ...]}` ("" = the single model)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RetrainFileError(f"{path}: not a retrain file written by the monitor step ({exc})") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in raw.items()
    ):
        raise RetrainFileError(f'{path}: expected {{"<use case>": ["<partition key>", ...]}}')
    return {name: list(keys) for name, keys in raw.items()}


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="python -m ml_service.pipelines.steps.monitor",
        description=__doc__.strip().splitlines()[0],
        epilog="Example: --all --collected local/monitoring/collected --actuals local/monitoring/actuals "
        "--output local/monitoring/output",
    )
    cli.add_argument("--use-case", help="declared use case(s) or group(s), comma-separated")
    cli.add_argument("--all", action="store_true", help="every declared use case")
    cli.add_argument("--collected", type=Path, required=True, help="folder of collected requests")
    cli.add_argument("--actuals", type=Path, help="folder of actuals (outcomes that arrived later)")
    cli.add_argument("--output", type=Path, required=True, help="output folder: monitor.json, retrain.json, report")
    return cli


def monitor_one(name: str, frames: dict, args: argparse.Namespace) -> dict[str, Any]:
    from ml_service.monitoring.decay import ActualsError, read_actuals
    from ml_service.monitoring.monitor import actual_keys, monitor_use_case
    from ml_service.pipelines.batch import download_models
    from ml_service.registry.model_set import read_manifest
    from ml_service.use_case import load_use_case

    use_case = load_use_case(name, root())
    config = use_case.config
    models_dir = args.output / MODELS_FOLDER
    version, folder = download_models(config.model_name, None, models_dir, copy=False)
    if not version:
        return {"model_name": config.model_name, "error": "no production model: train and register it first (make run)"}
    data_folder = models_dir / folder
    actuals = actuals_error = None
    if args.actuals is not None:
        try:
            actuals = read_actuals(args.actuals, name, config.label, actual_keys(config))
        except ActualsError as exc:
            actuals_error = str(exc)
    result = monitor_use_case(
        config,
        use_case.implementation.metrics,
        read_manifest(data_folder),
        version,
        data_folder,
        frames,
        actuals,
    )
    if actuals_error:
        result["actuals_error"] = actuals_error
    return result


def _line(name: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"monitor: {name}: {result['error']}"
    retrain = result["retrain"]
    shown = ", ".join(k or result["model_name"] for k in retrain[:5]) + (" ..." if len(retrain) > 5 else "")
    listed = f": {shown}" if retrain else ""
    return (
        f"monitor: {name}: {result['models']} model(s), {result['with_data']} with collected data, "
        f"{result['drifted']} drifted, {result['decayed']} decayed; retrain {len(retrain)}{listed}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def body() -> None:
        from ml_service.monitoring.collected import read_collected
        from ml_service.monitoring.report import write_monitor_report
        from ml_service.util.files import write_json

        names = select_use_cases(args.use_case, root(), args.all)
        if not args.collected.is_dir():
            raise FileNotFoundError(
                f"--collected {args.collected}: no such folder; collect requests first (make traffic, or make serve "
                "and send some: it collects into local/monitoring/collected)"
            )
        if args.actuals is not None and not args.actuals.is_dir():
            raise FileNotFoundError(f"--actuals {args.actuals}: no such folder")
        collected = read_collected(args.collected)
        rows = sum(len(frame) for frame in collected.frames.values())
        print(f"monitor: {rows} collected row(s) for {len(collected.frames)} model(s) in {args.collected}", flush=True)
        for problem in collected.problems[:5]:
            print(f"monitor: skipped {problem}", flush=True)
        outcome: dict[str, Any] = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "collected": str(args.collected),
            "rows": rows,
            "problems": collected.problems,
            "use_cases": {},
        }
        for name in names:
            outcome["use_cases"][name] = result = monitor_one(name, collected.frames, args)
            print(_line(name, result), flush=True)
        retrain = {n: r["retrain"] for n, r in outcome["use_cases"].items() if r.get("retrain")}
        args.output.mkdir(parents=True, exist_ok=True)
        write_json(args.output / MONITOR_FILE, outcome)
        write_json(args.output / RETRAIN_FILE, retrain)
        report = write_monitor_report(args.output / REPORT_FILE, outcome)
        print(f"monitor: report {report.resolve()}")
        if retrain:
            print(
                f"monitor: to retrain only these: python -m ml_service.pipelines.run_train_pipeline "
                f"--retrain-from {args.output / RETRAIN_FILE}"
            )

    return run_step("monitor", body)


if __name__ == "__main__":
    sys.exit(main())
