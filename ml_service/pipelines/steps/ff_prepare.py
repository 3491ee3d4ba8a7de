"""Step (many models): put each use case's raw data in the datastore, check and prepare it, plan the models.

Writes one CSV per model (one per partition for partitioned use cases) and `prepared.json`, the list of
training tasks with the hashes that decide, on a rerun, what needs training again.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ml_service.pipelines.catalog import MANY_MODELS_CONFIGS
from ml_service.pipelines.many_models import plan_use_case, write_plan
from ml_service.pipelines.steps.common import run_step
from ml_service.util.env_variables import load_settings

DEFAULT_CONFIG = MANY_MODELS_CONFIGS["ff"]
PLOTS_PER_USE_CASE = 5


def parser(description: str | None) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG), help="pipeline config JSON")
    return result


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--output", type=Path, required=True, help="output folder: prepared data and plan")
    cli.add_argument("--datastore", type=Path, help="raw data folder (default: <LOCAL_DIR>/datastore)")
    cli.add_argument("--partitions", type=int, help="override the partition count of generated partitioned data")
    cli.add_argument("--only", help="comma-separated model names to prepare (default: every use case)")
    args = cli.parse_args(argv)

    def body() -> None:
        from ff.config import config_hash, load_pipeline_config, use_fast_path
        from ff.copy_data import materialize_raw_data
        from ff.prepare import DataValidationError, prepare_file

        config = load_pipeline_config(args.config)
        datastore = args.datastore or load_settings().local_path / "datastore"
        wanted = set(args.only.split(",")) if args.only else set(config.names)
        unknown = wanted - set(config.names)
        if unknown:
            raise ValueError(f"--only: unknown model name(s) {sorted(unknown)}; known: {', '.join(config.names)}")
        tasks = []
        for use_case in config.use_cases:
            if use_case.model_name not in wanted:
                continue
            spec = use_case.data.generator
            if args.partitions and spec is not None and use_case.partition_columns:
                generator = dataclasses.replace(spec, partitions=args.partitions)
                use_case = dataclasses.replace(use_case, data=dataclasses.replace(use_case.data, generator=generator))
            raw = materialize_raw_data(use_case, datastore)
            try:
                files = prepare_file(raw, args.output / use_case.model_name, use_case)
            except DataValidationError as exc:
                raise ValueError(f"{use_case.model_name}: {exc}") from None
            fast = use_fast_path(use_case, len(files)) if use_case.partition_columns else False
            tasks += plan_use_case(use_case, files, args.output, config_hash(use_case), fast, PLOTS_PER_USE_CASE)
            print(f"ff_prepare: {use_case.model_name}: {len(files)} model(s) from {raw}", flush=True)
        write_plan(args.output, tasks)
        print(f"ff_prepare: {len(tasks)} model(s) planned in {args.output}")

    return run_step("ff_prepare", body)


if __name__ == "__main__":
    sys.exit(main())
