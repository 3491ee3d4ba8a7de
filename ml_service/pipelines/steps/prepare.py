"""Step: put each use case's raw data in the datastore, check it, split it into one file per model, plan training.

Writes `<output>/<use case>/<partition key>.csv` (`data.csv` for a single model) and `prepared.json`, the list
of training tasks with the hashes of data, configuration and model code that decide, on a rerun, what trains
again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ml_service.config import select_use_cases
from ml_service.pipelines.preparation import prepare_use_case
from ml_service.pipelines.steps.common import root, run_step, step_parser
from ml_service.pipelines.steps.monitor import RetrainFileError, read_retrain
from ml_service.pipelines.training import write_plan
from ml_service.use_case import load_use_case
from ml_service.util.env_variables import load_settings


def parse_options(values: list[str]) -> dict[str, object]:
    """`--data-option partitions=2000` pairs; values are JSON when they parse as JSON, else text."""
    options: dict[str, object] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--data-option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options


def read_selection(path: Path, names: list[str]) -> dict[str, list[str]]:
    """The models to retrain, `{use case: [partition keys]}` ("" for a single model), among `names`."""
    try:
        selection = read_retrain(path)
    except RetrainFileError as exc:
        raise ValueError(f"--retrain-from {exc}") from None
    chosen = {name: keys for name, keys in selection.items() if name in names and keys}
    if not chosen:
        raise ValueError(f"--retrain-from {path}: selects no model of {', '.join(names)}: nothing to retrain")
    return chosen


def main(argv: list[str] | None = None) -> int:
    cli = step_parser(__doc__)
    cli.add_argument("--use-case", help="declared use case(s), comma-separated")
    cli.add_argument("--all", action="store_true", help="every declared use case")
    cli.add_argument("--datastore", type=Path, help="raw data folder (default: <LOCAL_DIR>/datastore)")
    cli.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option of generated data (e.g. partitions=2000)",
    )
    cli.add_argument(
        "--retrain-from",
        type=Path,
        help="retrain.json of the monitor step: plan only the models it selects ({use case: [keys]})",
    )
    args = cli.parse_args(argv)

    def body() -> None:
        project = root()
        names = select_use_cases(args.use_case, project, args.all)
        selected = read_selection(args.retrain_from, names) if args.retrain_from else None
        if selected is not None:
            names = [n for n in names if n in selected]
        options = parse_options(args.data_option)
        datastore = args.datastore or load_settings().local_path / "datastore"
        use_cases = [load_use_case(name, project) for name in names]
        if options and not any(u.config.data.generate is not None for u in use_cases):
            raise ValueError(f"--data-option: none of {', '.join(names)} generates its data (data.generate)")
        tasks = []
        for use_case in use_cases:
            name = use_case.name
            own = options if use_case.config.data.generate is not None else None
            only = set(selected[name]) if selected is not None else None
            planned, raw = prepare_use_case(use_case, datastore, args.output, own or None, only)
            tasks += planned
            print(f"prepare: {name}: {len(planned)} model(s) from {raw}", flush=True)
        write_plan(args.output, tasks)
        print(f"prepare: {len(tasks)} model(s) planned in {args.output}")

    return run_step("prepare", body)


if __name__ == "__main__":
    sys.exit(main())
