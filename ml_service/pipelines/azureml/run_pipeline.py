"""Build (and submit) the Azure ML SDK v2 job(s) of use cases: the training pipeline, or their AutoML jobs.

--dry-run writes the job YAML (plus the code snapshot and inputs it refers to) and needs no credentials.
Without it, AZURE_SUBSCRIPTION_ID, RESOURCE_GROUP and WORKSPACE_NAME (environment or .env) name the workspace;
the job is submitted with DefaultAzureCredential, and --wait streams its status and exits non-zero when the
job failed or no model was registered.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_service.config import ConfigError, project_root, select_use_cases
from ml_service.pipelines.azureml.builder import (
    ParallelSettings,
    build_pipeline_job,
    select_steps,
    validation_errors,
)
from ml_service.pipelines.azureml.environment import build_environment, stage_code
from ml_service.pipelines.definition import PIPELINE_INPUT, training_pipeline
from ml_service.use_case import LoadedUseCase, load_use_case
from ml_service.util.env_variables import Settings, SettingsError, load_settings

WORKSPACE_VARIABLES = "AZURE_SUBSCRIPTION_ID, RESOURCE_GROUP and WORKSPACE_NAME"


class UsageError(ValueError):
    """A problem the user fixes (use case, steps, config): one line, exit code 2."""


@dataclass
class RenderedJob:
    name: str  # file stem of the YAML: "pipeline" or "automl-<model name>"
    job: Any
    registers: tuple[str, ...]  # model names the job may register (empty: no register step)


def use_cases_of(name: str, root: Path) -> list[LoadedUseCase]:
    """The declared use cases `name` stands for (a use case, a group, or a comma-separated list)."""
    try:
        return [load_use_case(n, root) for n in select_use_cases(name, root)]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def parallel_settings(use_cases: list[LoadedUseCase]) -> ParallelSettings:
    """The parallel step's knobs: the `parallel` section of the (first) partitioned use case, where the fan-out
    matters; otherwise the first use case's."""
    partitioned = [u for u in use_cases if u.config.is_partitioned]
    return (partitioned or use_cases)[0].config.parallel


def copy_input(source: Path, folder: Path) -> Path:
    """A copy of a pipeline input next to the job YAML: the dry-run folder holds everything the job uploads."""
    if not source.exists():
        raise UsageError(f"pipeline input {source} does not exist")
    if folder.exists():
        shutil.rmtree(folder)
    if source.is_dir():
        return Path(shutil.copytree(source, folder))
    folder.mkdir(parents=True)
    return Path(shutil.copy2(source, folder / source.name))


def render_pipeline(
    use_case: str, settings: Settings, workdir: Path, steps: list[str] | None, environment: Any
) -> RenderedJob:
    root = project_root(settings.project_root)
    use_cases = use_cases_of(use_case, root)
    spec = training_pipeline([u.name for u in use_cases], use_case)
    chosen = select_steps(spec, steps)
    inputs = {}
    for step in chosen:
        for binding in step.inputs.values():
            if binding.source == PIPELINE_INPUT:
                inputs[binding.name] = copy_input(root / spec.inputs[binding.name], workdir / "inputs" / binding.name)
    code = stage_code(root, workdir / "code")
    job = build_pipeline_job(
        spec,
        code=code,
        environment=environment,
        inputs=inputs,
        compute=settings.aml_compute_cluster_name,
        experiment_name=use_case.replace(",", "-"),
        parallel=parallel_settings(use_cases),
        steps=steps,
        tags=_tags(settings, use_case),
    )
    registers = any(s.module.rsplit(".", 1)[-1].endswith("register") for s in chosen)
    return RenderedJob("pipeline", job, tuple(u.model_name for u in use_cases) if registers else ())


def render_automl(use_case: str, settings: Settings, workdir: Path) -> list[RenderedJob]:
    from ml_service.pipelines.azureml.automl import build_automl_job, write_training_data

    root = project_root(settings.project_root)
    jobs = []
    for case in use_cases_of(use_case, root):
        try:
            folder = write_training_data(case, workdir / "automl" / case.model_name, workdir / "datastore")
            job = build_automl_job(
                case, folder, settings.aml_compute_cluster_name, f"{use_case}-automl", _tags(settings, use_case)
            )
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        jobs.append(RenderedJob(f"automl-{case.model_name}", job, ()))
    return jobs


def _tags(settings: Settings, use_case: str) -> dict[str, str]:
    tags = {"use_case": use_case}
    if settings.build_id:
        tags["build_id"] = settings.build_id
    if settings.build_uri:
        tags["build_uri"] = settings.build_uri
    return tags


def check(rendered: RenderedJob) -> None:
    if rendered.name.startswith("automl-"):
        from ml_service.pipelines.azureml.automl import automl_validation_errors

        errors = automl_validation_errors(rendered.job)
    else:
        errors = validation_errors(rendered.job)
    if errors:
        shown = "; ".join(f"{k}: {' '.join(str(v).split())}" for k, v in errors.items())
        raise UsageError(f"job {rendered.name} fails the Azure ML SDK's validation: {shown}")


def render(args: argparse.Namespace, settings: Settings, workdir: Path) -> list[RenderedJob]:
    steps = [s for s in args.steps.split(",") if s] if args.steps else None
    if args.automl:
        if steps:
            raise UsageError("--steps applies to the pipeline, not to --automl")
        rendered = render_automl(args.use_case, settings, workdir)
    else:
        environment = build_environment(settings.project_root.resolve(), settings.aml_environment_name)
        rendered = [render_pipeline(args.use_case, settings, workdir, steps, environment)]
    for item in rendered:
        check(item)
    return rendered


def dry_run(rendered: list[RenderedJob], output: Path) -> None:
    from ml_service.pipelines.azureml.job_yaml import load_back, write_job_yaml

    for item in rendered:
        path = write_job_yaml(item.job, output / f"{item.name}.yml")
        load_back(path)
        print(f"wrote {path} (validated offline by the Azure ML SDK; loads back with load_job)")


def submit(rendered: list[RenderedJob], settings: Settings, wait: bool) -> int:
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    from ml_service.pipelines.azureml import registry_check
    from ml_service.registry.mlflow_registry import connect

    ml_client = MLClient(
        DefaultAzureCredential(), settings.azure_subscription_id, settings.resource_group, settings.workspace_name
    )
    names = sorted({n for item in rendered for n in item.registers})
    client = before = None
    if wait and names:
        tracking_uri = ml_client.workspaces.get(settings.workspace_name).mlflow_tracking_uri
        client = connect(replace(settings, mlflow_tracking_uri=tracking_uri))
        before = registry_check.snapshot(client, names, settings.production_alias)
    submitted = []
    for item in rendered:
        job = ml_client.jobs.create_or_update(item.job)
        print(f"submitted {item.name}: {job.name} {job.studio_url or ''}".rstrip(), flush=True)
        submitted.append((item, job.name))
    if not wait:
        return 0
    for item, name in submitted:
        try:
            ml_client.jobs.stream(name)
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own types on a failed job; report in one line
            print(f"error: job {name} ({item.name}) failed: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
            return 1
        status = ml_client.jobs.get(name).status
        if status != "Completed":
            print(f"error: job {name} ({item.name}) ended {status}", file=sys.stderr)
            return 1
    if client is not None and before is not None:
        after = registry_check.snapshot(client, names, settings.production_alias)
        changed = registry_check.registered(before, after)
        if not changed:
            print(f"error: the job registered no model ({', '.join(names)} unchanged)", file=sys.stderr)
            return 1
        print(f"registered: {', '.join(changed)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", required=True, help="declared use case(s) or group, comma-separated")
    parser.add_argument("--steps", help="comma-separated steps to run (default: all), e.g. prepare")
    parser.add_argument("--automl", action="store_true", help="Azure ML AutoML jobs instead of the pipeline")
    parser.add_argument("--wait", action="store_true", help="stream the job; fail if it fails or registers nothing")
    parser.add_argument("--dry-run", action="store_true", help="write the job YAML to --output; no credentials")
    parser.add_argument("--output", type=Path, help="dry-run folder (default: <LOCAL_DIR>/azureml/<use case>)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run and not settings.azure_workspace_configured:
        print(
            f"error: no Azure ML workspace configured: set {WORKSPACE_VARIABLES} (or use --dry-run)",
            file=sys.stderr,
        )
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    default = settings.local_path / "azureml" / args.use_case
    workdir = args.output or (default if args.dry_run else default / stamp)
    try:
        rendered = render(args, settings, workdir)
        if args.dry_run:
            dry_run(rendered, workdir)
            return 0
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return submit(rendered, settings, args.wait)


if __name__ == "__main__":
    sys.exit(main())
