"""Step: register what was promoted as MLflow models with their lineage, then write the run report.

A use case becomes ONE new version of its registered name: for a single model, the new model; for a
partitioned use case, a model set of the promoted partition models plus the production ones that were kept,
with a manifest of per-partition versions, metrics and hashes. One registration instead of thousands keeps it to
seconds, and the production pointer moves once, last, so the served set is always complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ml_service.monitoring.profile import PROFILE_FILE
from ml_service.pipelines.report import write_report
from ml_service.pipelines.steps.common import root, run_step, step_parser
from ml_service.pipelines.steps.evaluate import DECISIONS_FILE
from ml_service.pipelines.training import MODEL_FILE, model_folder, read_result, read_training_summary
from ml_service.registry.mlflow_model import save_mlflow_model
from ml_service.registry.model_set import SINGLE_KEY, partition_folder, write_manifest
from ml_service.use_case import LoadedUseCase, load_use_case
from ml_service.util.env_variables import Settings, load_settings
from ml_service.util.files import file_sha256, read_json, write_json
from ml_service.util.lineage import lineage_tags

REGISTERED_FILE = "registered.json"
REPORT_FILE = "report.html"
MODEL_ARTIFACT = "model"
KEPT_FIELDS = ("version", "metrics", "data_hash", "config_hash", "sample_input", "sha256", "run_id")


def _link_or_copy(source: Path, destination: Path) -> None:
    """A hard link where the file system allows one: model files are never changed in place (a retrained model
    is a new folder), so linking is safe and saves thousands of copies."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def next_entries(
    decision: dict[str, Any], trained_dir: Path, production: dict[str, Any] | None, run_id: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The next version's entries and each one's origin: promoted models from this run ("trained"), every other
    production entry unchanged ("production"). A promoted partition's version is its previous one plus one."""
    previous = production["models"] if production else {}
    models = {key: {f: entry[f] for f in KEPT_FIELDS if f in entry} for key, entry in previous.items()}
    origin = dict.fromkeys(previous, "production")
    for model_id, choice in decision["models"].items():
        if not choice["promote"]:
            continue
        key = choice["key"]
        result = read_result(trained_dir, model_id)
        before = previous.get(key, {}).get("version") or "0"
        models[key] = {
            "version": str(int(before) + 1) if key != SINGLE_KEY else "",
            "metrics": result["metrics"],
            "data_hash": result["data_hash"],
            "config_hash": result["config_hash"],
            "sample_input": result.get("sample_input"),
            "run_id": run_id,
        }
        origin[key] = "trained"
    return dict(sorted(models.items())), origin


def build_data_folder(
    use_case: LoadedUseCase,
    models: dict[str, dict[str, Any]],
    origin: dict[str, str],
    folder: Path,
    trained_dir: Path,
    production_data: Path | None,
) -> dict[str, Any]:
    """Lay out the models (from this run or from production) and write the manifest with each file's sha256."""
    shutil.rmtree(folder, ignore_errors=True)
    config = use_case.config
    for key, entry in models.items():
        if origin[key] == "trained":
            source = model_folder(trained_dir, f"{config.model_name}/{key}" if key else config.model_name)
        else:
            assert production_data is not None
            source = partition_folder(production_data, key)
        # the files a partition folder holds, hashed by name (rglob per folder costs ~0.2 ms x 10,000); a model
        # registered before training profiles were kept has none (its drift is then reported as not measurable)
        hashes = {}
        for name in (MODEL_FILE, PROFILE_FILE):
            if name == MODEL_FILE or (source / name).is_file():
                _link_or_copy(source / name, partition_folder(folder, key) / name)
                hashes[name] = file_sha256(partition_folder(folder, key) / name)
        entry["sha256"] = hashes
    allowed = {c: list(s.allowed) for c, s in config.columns.items() if s.allowed is not None}
    extra = {
        "label": config.label,
        "metric": config.evaluation.metric,
        "direction": config.evaluation.direction,
        **({"time_column": config.time.column, "frequency": config.time.frequency} if config.time else {}),
    }
    partitions = list(config.partition_columns)
    return write_manifest(
        folder,
        model_name=config.model_name,
        use_case=config.name,
        input_types=config.input_types(),
        partition_columns=partitions,
        models=models,
        allowed=allowed,
        extra=extra,
    )


def code_folders(use_case: LoadedUseCase, staging: Path) -> list[Path]:
    """Copies of the top-level packages holding the use case's model code, without tests and caches: shipped
    whole, so the pickles' imports resolve wherever the model is loaded."""
    tops = []
    for path in use_case.model_code():
        relative = path.resolve().relative_to(use_case.root.resolve())
        tops.append(use_case.root / relative.parts[0])
    shutil.rmtree(staging, ignore_errors=True)
    copies = []
    for top in dict.fromkeys(tops):
        ignore = shutil.ignore_patterns("tests", "__pycache__", "*.pyc")
        copies.append(Path(shutil.copytree(top, staging / top.name, ignore=ignore)))
    return copies


def set_summary(manifest: dict[str, Any]) -> tuple[dict[str, float], str]:
    """What a version records of its models (Azure ML's MLflow surface has version tags, not version metrics):
    a single model's metrics and data hash; for a model set, the mean of each metric over its models and a hash
    of their data hashes."""
    entries = list(manifest["models"].values())
    if len(entries) == 1 and manifest["kind"] == "model":
        return dict(entries[0].get("metrics", {})), entries[0].get("data_hash", "")
    names = sorted({m for e in entries for m in e.get("metrics", {})})
    metrics = {n: sum(e["metrics"][n] for e in entries if n in e["metrics"]) / len(entries) for n in names}
    data = hashlib.sha256("".join(sorted(e.get("data_hash", "") for e in entries)).encode()).hexdigest()
    return metrics, data


def version_tags(manifest: dict[str, Any], promoted: int, run_id: str) -> dict[str, str]:
    entries = list(manifest["models"].values())
    tags = {
        "use_case": manifest["use_case"],
        "kind": manifest["kind"],
        "models": str(len(entries)),
        "promoted": str(promoted),
        "run_id": run_id,
        "config_hash": entries[0].get("config_hash", "") if len(entries) == 1 else "",
    }
    return {k: v for k, v in tags.items() if v}


def registration_run(client: Any, settings: Settings, name: str) -> str:
    """A run to hold the registered files when training logged none (models trained by an Azure ML parallel job)."""
    from ml_service.registry.mlflow_registry import ensure_experiment

    run = client.create_run(ensure_experiment(client, name, settings), run_name=f"{name}-register")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def register_use_case(
    client: Any, settings: Settings, use_case: LoadedUseCase, decision: dict[str, Any], summary: dict, args: Any
) -> dict[str, Any]:
    from ml_service.registry.mlflow_registry import (
        download_data,
        production_model,
        register_version,
        remove_interrupted_versions,
    )

    name, model_name = use_case.name, use_case.model_name
    # a registration killed earlier left a pending version: remove it even if nothing is registered now
    for version in remove_interrupted_versions(client, model_name):
        print(f"register: {model_name}: removed version {version} left pending by an interrupted registration")
    promoted = [m for m, d in decision["models"].items() if d["promote"]]
    if not promoted:
        reasons = {d["reason"] for d in decision["models"].values()}
        reason = next(iter(reasons)) if len(reasons) == 1 else "no model better than production"
        print(f"register: {model_name}: nothing registered ({reason})")
        return {"registered": False, "reason": reason}
    run_id = summary["runs"].get(name) or registration_run(client, settings, name)
    current = production_model(client, model_name, settings.production_alias)
    production_data = production = None
    if current is not None and use_case.config.is_partitioned:
        production_data = download_data(client, current, args.output / "production" / name)
        production = read_json(production_data / "manifest.json")
    models, origin = next_entries(decision, args.trained, production, run_id)
    build = args.output / "build" / name
    manifest = build_data_folder(use_case, models, origin, build / "data", args.trained, production_data)
    requirements = tuple(getattr(use_case.implementation, "requirements", ()) or ())
    code = code_folders(use_case, build / "code")
    save_mlflow_model(build / MODEL_ARTIFACT, build / "data", code_paths=code, requirements=requirements)
    client.log_artifacts(run_id, str(build / MODEL_ARTIFACT), MODEL_ARTIFACT)
    metrics, data_hash = set_summary(manifest)
    if not settings.run_evaluation:
        rule: dict[str, Any] = {"force": True}
    elif use_case.config.is_partitioned:  # a set stands on the production it was built from
        rule = {"base_version": decision["production_version"] or ""}
    else:  # compare-and-set: still better than production at the moment the pointer moves
        rule = {"metric": decision["metric"], "direction": decision["direction"]}
    registration = register_version(
        client,
        model_name,
        run_id,
        MODEL_ARTIFACT,
        version_tags(manifest, len(promoted), run_id),
        settings.production_alias,
        metrics=metrics,
        lineage=lineage_tags(settings.build_id, settings.build_uri),
        data_hash=data_hash,
        folder=build / MODEL_ARTIFACT,
        **rule,
    )
    outcome = {
        "registered": registration.version is not None,
        "promoted": registration.promoted,
        "version": registration.version,
        "production_version": registration.production_version,
        "reason": registration.reason,
        "models": len(models),
        "model_name": model_name,
    }
    if not registration.promoted:
        where = f"version {registration.version} registered but " if registration.version else ""
        print(f"register: {model_name}: {where}not promoted: {registration.reason}")
        return outcome
    what = f"model set of {len(models)} ({len(promoted)} promoted)" if use_case.config.is_partitioned else "model"
    print(f"register: {model_name} version {registration.version}: {what}, now in production")
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["trained", "decisions"]).parse_args(argv)

    def body() -> None:
        from ml_service.registry.mlflow_registry import connect

        project = root()
        settings = load_settings()
        client = connect(settings)
        summary = read_training_summary(args.trained)
        decisions = read_json(args.decisions / DECISIONS_FILE)
        registered = {}
        for name, decision in decisions.items():
            use_case = load_use_case(name, project)
            registered[name] = register_use_case(client, settings, use_case, decision, summary, args)
        write_json(args.output / REGISTERED_FILE, registered)
        report = write_report(args.output / REPORT_FILE, summary["results"], decisions, registered, args.trained)
        print(f"register: report written to {report.resolve()}")

    return run_step("register", body)


if __name__ == "__main__":
    sys.exit(main())
