"""Put a use case's raw data into the datastore folder (a local folder stands in for the Azure datastore).

Why: every later step reads from the datastore only, so a run never depends on where the raw file came
from; generated data is written there as CSV exactly like a user's own file would be.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ff.config import DEFAULT_CONFIG_PATH, UseCase, load_pipeline_config, resolve_data_path
from ff.prepare import write_csv

DEFAULT_DATASTORE = Path("local") / "datastore"
RAW_FILE = "raw.csv"


def copy_raw_data(source: str | Path, datastore: str | Path, name: str | None = None) -> Path:
    """Copy one raw file into ``datastore`` (as ``name`` or its own name) and return the copy's path."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"raw data not found: {source}")
    target = Path(datastore) / (name or source.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def raw_data_path(use_case: UseCase, datastore: str | Path) -> Path:
    """Where a use case's raw data lives in the datastore: ``<datastore>/<model_name>/raw.csv``."""
    return Path(datastore) / use_case.model_name / RAW_FILE


def materialize_raw_data(use_case: UseCase, datastore: str | Path, repo_root: str | Path | None = None) -> Path:
    """Copy the configured CSV, or generate the configured synthetic data, to ``raw_data_path``."""
    target = raw_data_path(use_case, datastore)
    source = resolve_data_path(use_case, repo_root)
    if source is not None:
        return copy_raw_data(source, target.parent, target.name)
    from ff.data_generator import generate_energy  # only when generating: it imports scipy.signal

    spec = use_case.data.generator
    assert spec is not None  # the config guarantees a path or a generator
    return write_csv(generate_energy(spec.partitions, spec.days, spec.seed, spec.start), target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ff.copy_data",
        description="Copy (or generate) raw data into the datastore folder: one file, or every use case.",
    )
    parser.add_argument("--datastore", default=str(DEFAULT_DATASTORE), help="datastore folder")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--source", help="copy this one file into the datastore")
    group.add_argument("--use-case", help="model_name of one use case (default: all)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="pipeline config JSON")
    args = parser.parse_args(argv)
    if args.source:
        print(copy_raw_data(args.source, args.datastore))
        return 0
    config = load_pipeline_config(args.config)
    use_cases = [config.get(args.use_case)] if args.use_case else list(config.use_cases)
    for use_case in use_cases:
        print(materialize_raw_data(use_case, args.datastore))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
