"""Step (many models): register what was promoted, then write the run report.

A single model becomes a new version of its registered name. A partitioned use case becomes ONE new version
of a model set: the promoted partition models plus the production ones that were kept, with a manifest of
per-partition versions, metrics and hashes. One registration instead of thousands keeps it to seconds, and
production moves once, last, so the served set is always complete. Production is checked again when it moves:
a single model by its metric, a set by the production version it was built on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ml_service.pipelines.many_models import RESULT_FILE, model_folder, read_training_summary
from ml_service.pipelines.report import write_report
from ml_service.pipelines.steps.common import run_step
from ml_service.pipelines.steps.ff_evaluate import DECISIONS_FILE
from ml_service.pipelines.steps.ff_prepare import parser
from ml_service.pipelines.steps.ff_train import SUMMARY_FILE
from ml_service.registry.model_folder import METADATA_FILE
from ml_service.registry.model_set import partition_folder, read_manifest, write_model_set
from ml_service.util.env_variables import Settings, load_settings
from ml_service.util.files import read_json, write_json
from ml_service.util.lineage import lineage_tags

REGISTERED_FILE = "registered.json"
REPORT_FILE = "report.html"
SET_ARTIFACT = "model_set"
MODEL_ARTIFACT = "model"


def next_set_models(
    results: dict[str, dict[str, Any]],
    decisions: dict[str, dict[str, Any]],
    production: dict[str, Any] | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The next set's entries and each one's origin: promoted partitions at their next version ("trained"),
    every other production entry unchanged ("production")."""
    previous = production["models"] if production else {}
    fields = ("version", "metrics", "data_hash", "config_hash")
    models = {key: {f: entry[f] for f in fields if f in entry} for key, entry in previous.items()}
    origin = dict.fromkeys(previous, "production")
    for model_id, decision in decisions.items():
        if not decision["promote"]:
            continue
        key, result = decision["key"], results[model_id]
        models[key] = {
            "version": str(int(previous.get(key, {}).get("version") or 0) + 1),
            "metrics": result["metrics"],
            "data_hash": result["data_hash"],
            "config_hash": result["config_hash"],
        }
        origin[key] = "trained"
    return dict(sorted(models.items())), origin


def _link_or_copy(source: str, destination: str) -> None:
    """A hard link where the file system allows one: the set folder is only read (to be logged), and model files
    are never changed in place (a retrained model is a new folder), so linking is safe and thousands of copies
    are saved."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def build_set_folder(
    name: str,
    partition_columns: list[str],
    models: dict[str, dict[str, Any]],
    origin: dict[str, str],
    folder: Path,
    trained_dir: Path,
    production_folder: Path | None,
) -> dict[str, Any]:
    """Lay out the set (each model's files from this run or from the production set) and its manifest."""
    shutil.rmtree(folder, ignore_errors=True)
    ignore = shutil.ignore_patterns(RESULT_FILE, "*.png")  # training records and plots are not part of a model
    for key in models:
        if origin[key] == "trained":
            source = model_folder(trained_dir, f"{name}/{key}")
        else:
            assert production_folder is not None
            source = partition_folder(production_folder, key)
        shutil.copytree(source, partition_folder(folder, key), ignore=ignore, copy_function=_link_or_copy)
    first = read_json(partition_folder(folder, next(iter(models))) / METADATA_FILE)
    write_model_set(
        folder,
        model_name=name,
        input_columns=first["input_columns"],
        partition_columns=partition_columns,
        models=models,
        input_schema=first.get("input_schema"),
        sample_input=first.get("sample_input"),
    )
    return read_manifest(folder)


def registration_run(client: Any, settings: Settings, name: str) -> str:
    """A run to hold the registered files when training logged none (models trained by an Azure ML parallel job)."""
    from ml_service.registry.mlflow_registry import ensure_experiment

    run = client.create_run(ensure_experiment(client, "ff", settings), run_name=f"{name}-register")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def register_folder(
    client: Any,
    settings: Settings,
    name: str,
    run_id: str,
    folder: Path,
    artifact: str,
    tags: dict[str, str],
    *,
    metrics: dict[str, float],
    data_hash: str,
    rule: dict[str, Any],
) -> Any:
    """Log the folder to the run and register it with lineage tags; production moves last (compare-and-set by
    `rule`: metric and direction, or base_version for a set)."""
    from ml_service.registry.mlflow_registry import register_version

    client.log_artifacts(run_id, str(folder), artifact)
    return register_version(
        client,
        name,
        run_id,
        artifact,
        {"run_id": run_id, **tags},
        settings.production_alias,
        metrics=metrics,
        lineage=lineage_tags(settings.build_id, settings.build_uri),
        data_hash=data_hash,
        folder=folder,
        force=not settings.run_evaluation,
        **({} if not settings.run_evaluation else rule),
    )


def set_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """A set's own metrics: the mean of each metric over its models (per-model ones stay in the manifest)."""
    values: dict[str, list[float]] = {}
    for entry in manifest["models"].values():
        for metric, value in entry["metrics"].items():
            values.setdefault(metric, []).append(float(value))
    return {f"mean_{metric}": sum(v) / len(v) for metric, v in sorted(values.items())}


def set_data_hash(manifest: dict[str, Any]) -> str:
    """One hash for the data of every model in the set (each entry's data_hash, in key order)."""
    lines = "".join(f"{key}={entry['data_hash']}\n" for key, entry in sorted(manifest["models"].items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def outcome(result: Any, models: int) -> dict[str, Any]:
    if result.promoted:
        return {"registered": True, "version": result.version, "models": models}
    return {"registered": False, "version": result.version, "reason": result.reason}


def single_model_tags(result: dict[str, Any]) -> dict[str, str]:
    return {
        "data_hash": result["data_hash"],
        "config_hash": result["config_hash"],
        "estimator": result["estimator"],
    }


def model_set_tags(manifest: dict[str, Any], promoted: int) -> dict[str, str]:
    return {"kind": "model_set", "models": str(len(manifest["models"])), "promoted": str(promoted)}


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--trained", type=Path, required=True, help="input: ff_train output")
    cli.add_argument("--decisions", type=Path, required=True, help="input: ff_evaluate output")
    cli.add_argument("--output", type=Path, required=True, help="output folder: registrations and report")
    args = cli.parse_args(argv)

    def body() -> None:
        from ff.config import load_pipeline_config
        from ml_service.registry.mlflow_registry import (
            connect,
            download_model,
            production_model,
            read_set_manifest,
            remove_interrupted_versions,
        )

        config = load_pipeline_config(args.config)
        settings = load_settings()
        client = connect(settings)
        summary = read_training_summary(args.trained, SUMMARY_FILE)
        results = {r["model_id"]: r for r in summary["results"]}
        all_decisions = read_json(args.decisions / DECISIONS_FILE)
        registered: dict[str, Any] = {}
        for name, decision in sorted(all_decisions.items()):
            # a registration killed earlier left a pending version: remove it even if nothing is registered now
            for version in remove_interrupted_versions(client, name):
                print(f"ff_register: {name}: removed version {version} left pending by an interrupted registration")
            promoted = [m for m, d in decision["models"].items() if d["promote"]]
            run_id = summary["runs"].get(name) or registration_run(client, settings, name)
            if not promoted:
                registered[name] = {"registered": False, "reason": "no model better than production"}
                print(f"ff_register: {name}: nothing registered (no model better than production)")
                continue
            if not config.get(name).partition_columns:
                folder = model_folder(args.trained, name)
                rule = {"metric": decision["metric"], "direction": decision["direction"]}
                result = register_folder(
                    client, settings, name, run_id, folder, MODEL_ARTIFACT, single_model_tags(results[name]),
                    metrics=results[name]["metrics"], data_hash=results[name]["data_hash"], rule=rule,
                )  # fmt: skip
                registered[name] = outcome(result, 1)
                print(f"ff_register: {name} version {result.version}: {result.reason}")
                continue
            current = production_model(client, name, settings.production_alias)
            scratch = args.output / "production" / name
            production = read_set_manifest(client, current, scratch) if current else None
            production_folder = download_model(client, current, scratch / "set") if production else None
            models, origin = next_set_models(results, decision["models"], production)
            folder = args.output / "sets" / name
            manifest = build_set_folder(
                name,
                list(config.get(name).partition_columns),
                models,
                origin,
                folder,
                args.trained,
                production_folder,
            )
            tags = model_set_tags(manifest, len(promoted))
            # the set merges the decisions made against this production version: it may take production only
            # while that version is still the production one
            rule = {"base_version": decision["production_version"] or ""}
            result = register_folder(
                client, settings, name, run_id, folder, SET_ARTIFACT, tags,
                metrics=set_metrics(manifest), data_hash=set_data_hash(manifest), rule=rule,
            )  # fmt: skip
            registered[name] = outcome(result, len(manifest["models"]))
            print(
                f"ff_register: {name} version {result.version}: model set of {len(manifest['models'])} "
                f"({len(promoted)} promoted): {result.reason}"
            )
        write_json(args.output / REGISTERED_FILE, registered)
        report = write_report(args.output / REPORT_FILE, summary["results"], all_decisions, registered, args.trained)
        print(f"ff_register: report written to {report.resolve()}")

    return run_step("ff_register", body)


if __name__ == "__main__":
    sys.exit(main())
