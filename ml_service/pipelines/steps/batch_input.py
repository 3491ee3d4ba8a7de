"""Step: write new rows to batch-score for each use case, `<output>/<use case>/*.csv` (no label).

A use case with `batch_input(options, destination)` writes its own (a forecast's future rows, with the inputs a
forecast would have); any other use case gets its prepared hold-out rows without the label, one file per
partition (holding the partition columns), so every declared use case can be batch-scored on data the project
generates.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ml_service.config import select_use_cases
from ml_service.data_checks import read_csv
from ml_service.pipelines.preparation import prepare_frame, trained_raw_data
from ml_service.pipelines.steps.common import root, run_step, step_parser
from ml_service.pipelines.training import write_csv
from ml_service.use_case import LoadedUseCase, load_use_case
from ml_service.util.env_variables import load_settings


def holdout_rows(use_case: LoadedUseCase, raw: Path, destination: Path) -> None:
    """The default: each partition's hold-out rows (the use case's own `split`), without the label."""
    config = use_case.config
    for key, part in prepare_frame(read_csv(raw, config), use_case, str(raw)).items():
        _, holdout = use_case.implementation.split(part)
        write_csv(holdout.drop(columns=[config.label]), destination / f"{key or 'data'}.csv")


def write_batch_input(use_case: LoadedUseCase, datastore: Path, output: Path) -> Path:
    """The use case's new rows in `output/<use case>/`, replaced as a whole (a staging folder renamed)."""
    raw = trained_raw_data(use_case, datastore)
    target = output / use_case.name
    staging = output / f".{use_case.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    options = {**(use_case.config.data.generate or {}), "training_data": str(raw)}
    try:
        if not use_case.has("batch_input"):
            raise NotImplementedError
        use_case.implementation.batch_input(options, staging)
    except NotImplementedError:
        shutil.rmtree(staging)
        staging.mkdir(parents=True)
        holdout_rows(use_case, raw, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    cli = step_parser(__doc__)
    cli.add_argument("--use-case", help="declared use case(s) or group(s), comma-separated")
    cli.add_argument("--all", action="store_true", help="every declared use case")
    cli.add_argument("--datastore", type=Path, help="raw data folder (default: <LOCAL_DIR>/datastore)")
    args = cli.parse_args(argv)

    def body() -> None:
        project = root()
        datastore = args.datastore or load_settings().local_path / "datastore"
        for name in select_use_cases(args.use_case, project, args.all):
            folder = write_batch_input(load_use_case(name, project), datastore, args.output)
            files = sorted(folder.glob("*.csv"))
            print(f"batch-input: {name}: {len(files)} file(s) in {folder}")

    return run_step("batch-input", body)


if __name__ == "__main__":
    sys.exit(main())
