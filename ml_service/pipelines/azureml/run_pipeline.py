"""Build (and submit) the Azure ML SDK v2 job(s) of use cases: the training pipeline, or their AutoML jobs.

--dry-run writes the job YAML (plus the code snapshot and inputs it refers to) and needs no credentials.
Without it, AZURE_SUBSCRIPTION_ID, RESOURCE_GROUP and WORKSPACE_NAME (environment or .env) name the workspace;
the job is submitted, and --wait streams its status and exits non-zero when the job failed. A run that
registered no model (nothing beat production) succeeded: it prints "nothing promoted" and exits 0, and the
outcome is published for later CI stages (`registered=true|false`: an Azure DevOps output variable of the
step, a GitHub Actions step output) so that they deploy only what changed.

In CI a run can outlast the sign-in of the task that started it (a workload-identity token is good for about
an hour), so the three parts can run as separate steps: `--submit-to F` (submit, note the registry, write F),
`--wait-for F` (wait, signed in with a credential that renews itself, `azure_credential`), `--check F`
(compare the registry with F's note, publish the outcome).
"""

from __future__ import annotations

import argparse
import json
import os
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
from ml_service.pipelines.azureml.environment import build_environment, build_parallel_environment, stage_code
from ml_service.pipelines.definition import PIPELINE_INPUT, batch_scoring_pipeline, training_pipeline
from ml_service.use_case import LoadedUseCase, load_use_case
from ml_service.util.env_variables import Settings, SettingsError, load_settings
from ml_service.util.files import write_json
from ml_service.util.lineage import git_commit

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


def lineage_variables(settings: Settings, root: Path) -> dict[str, str]:
    """What the register steps tag a model with, as environment variables of every step: in the cloud there is
    no CI variable and the code snapshot has no .git."""
    values = {"BUILD_ID": settings.build_id, "BUILD_URI": settings.build_uri, "GIT_COMMIT": git_commit(str(root))}
    return {name: value for name, value in values.items() if value}


def batch_input_folder(use_cases: list[LoadedUseCase], settings: Settings) -> Path:
    """The batch pipeline's new rows: `<LOCAL_DIR>/batch/input` (what `make batch-score` writes), written by the
    project's `batch_input` for the use cases it lacks."""
    from ml_service.pipelines.steps.batch_input import write_batch_input

    folder = settings.local_path / "batch" / "input"
    for use_case in use_cases:
        if not (folder / use_case.name).is_dir():
            write_batch_input(use_case, settings.local_path / "datastore", folder)
            print(f"wrote the new rows of {use_case.name} to {folder / use_case.name} (batch_input)")
    return folder


def render_pipeline(
    use_case: str,
    settings: Settings,
    workdir: Path,
    steps: list[str] | None,
    environment: Any,
    parallel_environment: Any = None,
    pipeline: str = "train",
) -> RenderedJob:
    root = project_root(settings.project_root)
    use_cases = use_cases_of(use_case, root)
    definition = batch_scoring_pipeline if pipeline == "batch-score" else training_pipeline
    spec = definition([u.name for u in use_cases], use_case)
    chosen = select_steps(spec, steps)
    sources = {name: root / path for name, path in spec.inputs.items()}
    if pipeline == "batch-score":
        sources["new_data"] = batch_input_folder(use_cases, settings)
    inputs = {}
    for step in chosen:
        for binding in step.inputs.values():
            if binding.source == PIPELINE_INPUT:
                inputs[binding.name] = copy_input(sources[binding.name], workdir / "inputs" / binding.name)
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
        parallel_environment=parallel_environment,
        environment_variables=lineage_variables(settings, root),
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
        root = project_root(settings.project_root)
        use_cases_of(args.use_case, root)  # an unknown use case is named before anything is built
        environment = build_environment(root, settings.aml_environment_name)
        parallel_environment = build_parallel_environment(root, settings.aml_environment_name)
        rendered = [
            render_pipeline(args.use_case, settings, workdir, steps, environment, parallel_environment, args.pipeline)
        ]
    for item in rendered:
        check(item)
    return rendered


def dry_run(rendered: list[RenderedJob], output: Path) -> None:
    from ml_service.pipelines.azureml.job_yaml import load_back, write_job_yaml

    for item in rendered:
        path = write_job_yaml(item.job, output / f"{item.name}.yml")
        load_back(path)
        print(f"wrote {path} (validated offline by the Azure ML SDK; loads back with load_job)")


def azure_credential() -> Any:
    """A credential that outlives a wait of hours where CI allows it, else DefaultAzureCredential.

    - Azure DevOps AzureCLI@2 task with a workload-identity service connection (and SYSTEM_ACCESSTOKEN mapped):
      AzurePipelinesCredential, which asks Azure DevOps for a new federated token whenever it needs one.
    - GitHub Actions job with `permissions: id-token: write` (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN) and
      AZURE_CLIENT_ID/AZURE_TENANT_ID set: ClientAssertionCredential whose assertion is a fresh GitHub OIDC token
      on every call (the Azure CLI session azure/login left behind cannot renew itself once its token expires).
    """
    from azure.identity import AzurePipelinesCredential, ClientAssertionCredential, DefaultAzureCredential

    names = ("AZURESUBSCRIPTION_TENANT_ID", "AZURESUBSCRIPTION_CLIENT_ID", "AZURESUBSCRIPTION_SERVICE_CONNECTION_ID")
    values = [os.environ.get(name, "") for name in (*names, "SYSTEM_ACCESSTOKEN")]
    if all(values):
        tenant, client, connection, token = values
        return AzurePipelinesCredential(
            tenant_id=tenant, client_id=client, service_connection_id=connection, system_access_token=token
        )
    github = ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "AZURE_TENANT_ID", "AZURE_CLIENT_ID")
    values = [os.environ.get(name, "") for name in github]
    if all(values):
        import urllib.error
        import urllib.parse
        import urllib.request

        request_url, request_token, tenant, client = values
        # The audience Microsoft Entra expects of a federated credential (the one azure/login asks for).
        url = f"{request_url}&audience={urllib.parse.quote('api://AzureADTokenExchange', safe='')}"

        def github_oidc_token() -> str:
            # Called by the credential each time it needs an Entra token: a new assertion each time.
            request = urllib.request.Request(url, headers={"Authorization": f"bearer {request_token}"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - the runner's URL
                    value = json.loads(response.read().decode("utf-8")).get("value")
            except (urllib.error.URLError, ValueError) as exc:
                raise RuntimeError(
                    f"cannot get a GitHub OIDC token ({exc}): does the job have `permissions: id-token: write`?"
                ) from exc
            if not value:
                raise RuntimeError("the GitHub OIDC token endpoint answered without a token ('value')")
            return value

        return ClientAssertionCredential(tenant_id=tenant, client_id=client, func=github_oidc_token)
    return DefaultAzureCredential()


def ml_client(settings: Settings) -> Any:
    from azure.ai.ml import MLClient

    workspace = (settings.azure_subscription_id, settings.resource_group, settings.workspace_name)
    return MLClient(azure_credential(), *workspace)


def registry_client(client: Any, settings: Settings) -> Any:
    from ml_service.registry.mlflow_registry import connect

    tracking_uri = client.workspaces.get(settings.workspace_name).mlflow_tracking_uri
    return connect(replace(settings, mlflow_tracking_uri=tracking_uri))


def registry_snapshot(client: Any, settings: Settings, names: list[str]) -> dict[str, list]:
    from ml_service.pipelines.azureml import registry_check

    states = registry_check.snapshot(registry_client(client, settings), names, settings.production_alias)
    return {name: [state.latest_version, state.production_version] for name, state in states.items()}


def publish_outcome(changed: list[str]) -> None:
    """`registered=true|false` for the CI stages after this one: an Azure DevOps output variable (the step
    needs a `name:`), a GitHub Actions step output."""
    value = "true" if changed else "false"
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.setvariable variable=registered;isOutput=true]{value}", flush=True)
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
            out.write(f"registered={value}\n")


def outcome(names: list[str], before: dict[str, list], after: dict[str, list]) -> int:
    """Print and publish what the run registered. Registering nothing is a success: no model beat production."""
    from ml_service.pipelines.azureml import registry_check

    def states(values: dict[str, list]) -> dict[str, registry_check.ModelState]:
        return {name: registry_check.ModelState(*values.get(name, (None, None))) for name in names}

    changed = registry_check.registered(states(before), states(after))
    if changed:
        print(f"registered: {', '.join(changed)}")
    else:
        print(f"nothing promoted: no model beat production ({', '.join(names)} unchanged); nothing to deploy")
    publish_outcome(changed)
    return 0


def submit_jobs(rendered: list[RenderedJob], settings: Settings, client: Any, state: Path | None) -> dict:
    """Submit every job; with `state`, note the registry first and write what was submitted there."""
    names = sorted({n for item in rendered for n in item.registers})
    record: dict[str, Any] = {"models": names, "before": {}, "jobs": []}
    if names:
        record["before"] = registry_snapshot(client, settings, names)
    for item in rendered:
        job = client.jobs.create_or_update(item.job)
        print(f"submitted {item.name}: {job.name} {job.studio_url or ''}".rstrip(), flush=True)
        record["jobs"].append({"name": job.name, "rendered": item.name})
    if state is not None:
        write_json(state, record)
    return record


def wait_jobs(record: dict, client: Any) -> int:
    for job in record["jobs"]:
        name = job["name"]
        try:
            client.jobs.stream(name)
        except Exception as exc:  # noqa: BLE001 - the SDK raises its own types on a failed job; report in one line
            print(f"error: job {name} ({job['rendered']}) failed: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
            return 1
        status = client.jobs.get(name).status
        if status != "Completed":
            print(f"error: job {name} ({job['rendered']}) ended {status}", file=sys.stderr)
            return 1
    return 0


def check_registry(record: dict, client: Any, settings: Settings) -> int:
    names = record["models"]
    if not names:
        publish_outcome([])
        return 0
    return outcome(names, record["before"], registry_snapshot(client, settings, names))


def read_state(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record.get("jobs"), list) or not isinstance(record.get("models"), list):
            raise ValueError("no 'jobs' or 'models' list")
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a state file written by --submit-to ({exc})") from None
    return record


def submit(rendered: list[RenderedJob], settings: Settings, wait: bool, state: Path | None = None) -> int:
    client = ml_client(settings)
    record = submit_jobs(rendered, settings, client, state)
    if not wait:
        return 0
    return wait_jobs(record, client) or check_registry(record, client, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", required=True, help="declared use case(s) or group, comma-separated")
    parser.add_argument("--steps", help="comma-separated steps to run (default: all), e.g. prepare")
    parser.add_argument(
        "--pipeline",
        choices=("train", "batch-score"),
        default="train",
        help="which pipeline: training (default) or batch scoring (its input: local/batch/input, make batch-score)",
    )
    parser.add_argument("--automl", action="store_true", help="Azure ML AutoML jobs instead of the pipeline")
    parser.add_argument("--wait", action="store_true", help="stream the job, then report what it registered")
    phases = parser.add_mutually_exclusive_group()
    phases.add_argument("--submit-to", type=Path, metavar="FILE", help="submit, note the registry, write FILE")
    phases.add_argument("--wait-for", type=Path, metavar="FILE", help="wait for the jobs of FILE (--submit-to)")
    phases.add_argument("--check", type=Path, metavar="FILE", help="report what the jobs of FILE registered")
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
    if args.wait_for or args.check:
        try:
            record = read_state(args.wait_for or args.check)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        client = ml_client(settings)
        return wait_jobs(record, client) if args.wait_for else check_registry(record, client, settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    default = settings.local_path / "azureml" / args.use_case
    workdir = args.output or (default if args.dry_run else default / stamp)
    try:
        rendered = render(args, settings, workdir)
        if args.dry_run:
            dry_run(rendered, workdir)
            if args.pipeline == "batch-score":  # the same pipeline published as a batch endpoint deployment
                from ml_service.pipelines.azureml.batch_endpoint import write_batch_endpoint

                for path in write_batch_endpoint(
                    rendered[0].job, workdir, args.use_case, settings.aml_compute_cluster_name
                ):
                    print(f"wrote {path} (loads back with the Azure ML SDK)")
            return 0
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return submit(rendered, settings, args.wait and not args.submit_to, args.submit_to)


if __name__ == "__main__":
    sys.exit(main())
