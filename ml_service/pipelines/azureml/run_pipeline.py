"""Build (and submit) the Azure ML SDK v2 job(s) of use cases: the training pipeline (all models, or with
--retrain-from only those a monitor run selected), batch scoring, monitoring, or their AutoML jobs.

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

`--pipeline monitor` runs the monitor step on what the online endpoint's data collector gathered (--endpoint,
or --collected); its `--check F` downloads the step's monitor.json, retrain.json and report.html to --results
and publishes `retrain=true|false`. `--schedules` instead writes (--dry-run) or creates an Azure ML JobSchedule
running the monitor job daily and a model monitor of the endpoint (ml_service/pipelines/azureml/monitor.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_service.config import ConfigError, project_root, select_use_cases
from ml_service.pipelines.azureml import monitor
from ml_service.pipelines.azureml.builder import (
    ParallelSettings,
    build_pipeline_job,
    select_steps,
    validation_errors,
)
from ml_service.pipelines.azureml.environment import build_environment, build_parallel_environment, stage_code
from ml_service.pipelines.definition import (
    PIPELINE_INPUT,
    Binding,
    PipelineSpec,
    batch_scoring_pipeline,
    training_pipeline,
)
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
    pipeline: str = "train"
    use_cases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # monitor: the schedules to write or create


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


RETRAIN_INPUT = "retrain"


def with_retrain_input(spec: PipelineSpec) -> PipelineSpec:
    """The training pipeline whose prepare step plans only the models a monitor run selected: the retrain file
    (the monitor step's retrain.json) is a pipeline input given to prepare as `--retrain-from FILE`, the option
    `run_train_pipeline --retrain-from` passes it locally (docs/monitoring.md)."""
    prepare = spec.step("prepare")
    planned = replace(prepare, inputs={**prepare.inputs, "retrain_from": Binding(PIPELINE_INPUT, RETRAIN_INPUT)})
    return replace(
        spec,
        description=f"{spec.description}: only the models in {RETRAIN_INPUT}.json",
        inputs={**spec.inputs, RETRAIN_INPUT: f"{RETRAIN_INPUT}.json"},
        steps=tuple(planned if s.name == prepare.name else s for s in spec.steps),
    )


def monitoring_sources(args: argparse.Namespace) -> dict[str, str]:
    """Where the monitor job reads from: --collected, else the data collector's folder of --endpoint (and
    --deployment); --actuals when given. Each a cloud folder (mounted) or a local one (uploaded)."""
    try:
        if args.collected:
            collected = args.collected
        elif args.endpoint:
            collected = monitor.collected_path(args.endpoint, args.deployment or None)
        else:
            raise UsageError(
                "--pipeline monitor needs --endpoint NAME (its data collector's folder is read) or --collected PATH"
            )
    except monitor.MonitorError as exc:
        raise UsageError(str(exc)) from None
    sources = {"collected": collected}
    if args.actuals:
        sources["actuals"] = args.actuals
    return sources


def render_pipeline(
    use_case: str,
    settings: Settings,
    workdir: Path,
    steps: list[str] | None,
    environment: Any,
    parallel_environment: Any = None,
    pipeline: str = "train",
    args: argparse.Namespace | None = None,
    retrain: dict[str, list[str]] | None = None,
) -> RenderedJob:
    root = project_root(settings.project_root)
    use_cases = use_cases_of(use_case, root)
    if retrain is not None:
        use_cases = [u for u in use_cases if u.name in retrain]
    names = [u.name for u in use_cases]
    sources: dict[str, Any]
    if pipeline == "monitor":
        assert args is not None
        spec = monitor.monitoring_pipeline(names, use_case, actuals=bool(args.actuals))
        sources = dict(monitoring_sources(args))
    else:
        definition = batch_scoring_pipeline if pipeline == "batch-score" else training_pipeline
        spec = definition(names, use_case)
        sources = {name: root / path for name, path in spec.inputs.items()}
        if retrain is not None:
            assert args is not None
            spec = with_retrain_input(spec)
            sources[RETRAIN_INPUT] = args.retrain_from
    chosen = select_steps(spec, steps)
    if pipeline == "batch-score":
        sources["new_data"] = batch_input_folder(use_cases, settings)
    inputs: dict[str, Any] = {}
    for step in chosen:
        for binding in step.inputs.values():
            if binding.source != PIPELINE_INPUT:
                continue
            source = sources[binding.name]
            if isinstance(source, str) and monitor.is_cloud_path(source):
                inputs[binding.name] = monitor.folder_input(source)  # already in the cloud: mounted, not uploaded
            else:
                inputs[binding.name] = copy_input(Path(source), workdir / "inputs" / binding.name)
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
    return RenderedJob(
        "pipeline",
        job,
        tuple(u.model_name for u in use_cases) if registers else (),
        pipeline=pipeline,
        use_cases=tuple(names),
    )


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
    schedule = rendered.extra.get("schedule")
    if schedule is not None:
        errors = validation_errors(schedule)
        if errors:
            raise UsageError(f"schedule {schedule.name} fails the Azure ML SDK's validation: {errors}")
    model_monitor = rendered.extra.get("model_monitor")
    if model_monitor is not None:
        # A MonitorSchedule has no schema validation of its own: its REST body is built (which checks the Spark
        # runtime and every signal) here, and its YAML is loaded back with the SDK's schema by --dry-run.
        try:
            model_monitor._to_rest_object()
        except Exception as exc:  # noqa: BLE001 - the SDK raises several types; one line names the problem
            raise UsageError(f"model monitor {model_monitor.name}: {' '.join(str(exc).split())[:400]}") from None


def retrain_selection(path: Path, members: list[str]) -> dict[str, list[str]]:
    """The use cases (of `members`) with models to retrain in a monitor run's retrain.json."""
    try:
        retrain = monitor.read_retrain(path)
    except monitor.MonitorError as exc:
        raise UsageError(str(exc)) from None
    unknown = sorted(set(retrain) - set(members))
    if unknown:
        raise UsageError(f"{path} names {', '.join(unknown)}, not among the use cases {', '.join(members)}")
    return monitor.selected(retrain)


def live_deployment(settings: Settings, endpoint: str) -> str:
    """The deployment of the endpoint taking the most traffic (the live colour of a blue/green endpoint)."""
    traffic = ml_client(settings).online_endpoints.get(endpoint).traffic or {}
    live = [name for name, share in sorted(traffic.items(), key=lambda item: -item[1]) if share > 0]
    if not live:
        raise UsageError(f"endpoint {endpoint} sends no traffic to any deployment: pass --deployment NAME")
    return live[0]


def monitoring_schedules(rendered: RenderedJob, args: argparse.Namespace, settings: Settings, workdir: Path) -> None:
    """The JobSchedule of the monitor job, and with --endpoint the model monitor of its deployment (with the
    training data of each use case as reference), kept in `rendered.extra`."""
    root = project_root(settings.project_root)
    try:
        rendered.extra["schedule"] = monitor.build_job_schedule(rendered.job, args.use_case, args.cron)
        if not args.endpoint:
            print("no --endpoint: no model monitor (it watches an online endpoint's deployment)")
            return
        if args.deployment:
            deployment = args.deployment
        elif args.dry_run:
            raise UsageError("--schedules --dry-run needs --deployment NAME: the deployment the model monitor watches")
        else:
            deployment = live_deployment(settings, args.endpoint)
        references = [
            monitor.reference_data(
                load_use_case(name, root), workdir / monitor.REFERENCE_FOLDER / name, workdir / "datastore"
            )
            for name in rendered.use_cases
        ]
        rendered.extra["references"] = references
        rendered.extra["model_monitor"] = monitor.build_model_monitor(
            args.endpoint, deployment, references, args.alert_email, args.cron
        )
    except (monitor.MonitorError, ConfigError) as exc:
        raise UsageError(str(exc)) from None


def render(args: argparse.Namespace, settings: Settings, workdir: Path) -> list[RenderedJob]:
    steps = [s for s in args.steps.split(",") if s] if args.steps else None
    if args.automl:
        if steps:
            raise UsageError("--steps applies to the pipeline, not to --automl")
        rendered = render_automl(args.use_case, settings, workdir)
    else:
        root = project_root(settings.project_root)
        members = use_cases_of(args.use_case, root)  # an unknown use case is named before anything is built
        retrain = None
        if args.retrain_from:
            retrain = retrain_selection(args.retrain_from, [u.name for u in members])
            if not retrain:
                print(f"nothing to retrain: {args.retrain_from} selects no model of {args.use_case}")
                return []
            print(f"retraining only: {', '.join(f'{n} ({len(k)} model(s))' for n, k in retrain.items())}")
        environment = build_environment(root, settings.aml_environment_name)
        parallel_environment = build_parallel_environment(root, settings.aml_environment_name)
        rendered = [
            render_pipeline(
                args.use_case,
                settings,
                workdir,
                steps,
                environment,
                parallel_environment,
                args.pipeline,
                args=args,
                retrain=retrain,
            )
        ]
        if args.pipeline == "monitor" and args.schedules:
            monitoring_schedules(rendered[0], args, settings, workdir)
    for item in rendered:
        check(item)
    return rendered


def dry_run(rendered: list[RenderedJob], output: Path) -> None:
    from ml_service.pipelines.azureml.job_yaml import load_back, write_job_yaml

    for item in rendered:
        path = write_job_yaml(item.job, output / f"{item.name}.yml")
        load_back(path)
        print(f"wrote {path} (validated offline by the Azure ML SDK; loads back with load_job)")
        if "schedule" in item.extra:
            path = monitor.write_job_schedule(item.extra["schedule"], output, path.name)
            monitor.load_schedule_back(path)
            print(f"wrote {path} (a JobSchedule of {item.name}.yml; loads back with the SDK)")
        if "model_monitor" in item.extra:
            for path in monitor.write_model_monitor(item.extra["model_monitor"], item.extra["references"], output):
                print(f"wrote {path} (loads back with the SDK)")


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


def publish_outcome(changed: list[str], variable: str = "registered") -> None:
    """`registered=true|false` (or another `variable`) for the CI stages after this one: an Azure DevOps output
    variable (the step needs a `name:`), a GitHub Actions step output."""
    value = "true" if changed else "false"
    if os.environ.get("TF_BUILD"):
        print(f"##vso[task.setvariable variable={variable};isOutput=true]{value}", flush=True)
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as out:
            out.write(f"{variable}={value}\n")


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


def submit_jobs(
    rendered: list[RenderedJob], settings: Settings, client: Any, state: Path | None, results: Path | None = None
) -> dict:
    """Submit every job; with `state`, note the registry first and write what was submitted there."""
    names = sorted({n for item in rendered for n in item.registers})
    record: dict[str, Any] = {"models": names, "before": {}, "jobs": []}
    if any(item.pipeline == "monitor" for item in rendered):
        record["results"] = str(results or settings.local_path / "monitoring" / "azure")
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


def monitor_outcome(results: Path) -> int:
    """Print and publish what a monitor run selected: `retrain=true|false` (read by the CI stage that retrains
    only those models with --retrain-from)."""
    path = results / "retrain.json"
    try:
        picks = monitor.selected(monitor.read_retrain(path))
    except monitor.MonitorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if picks:
        print(f"retrain: {', '.join(f'{name} ({len(keys)} model(s))' for name, keys in sorted(picks.items()))}")
    else:
        print("nothing to retrain: no model drifted or decayed past its thresholds")
    print(f"report: {results / 'report.html'}")
    publish_outcome(sorted(picks), "retrain")
    return 0


def download_results(record: dict, client: Any, results: Path) -> None:
    """The monitor step's output folder (monitor.json, retrain.json, report.html) into `results`."""
    import tempfile

    for job in record["jobs"]:
        steps = list(client.jobs.list(parent_job_name=job["name"]))
        if len(steps) != 1:
            raise UsageError(f"job {job['name']}: expected the one monitor step, found {len(steps)} child job(s)")
        with tempfile.TemporaryDirectory() as tmp:
            client.jobs.download(steps[0].name, output_name="output", download_path=tmp)
            # the SDK writes a named output under <download_path>/named-outputs/<output name>/
            downloaded = Path(tmp) / "named-outputs" / "output"
            if not (downloaded / "retrain.json").is_file():  # never report a retrain.json left by an earlier run
                raise UsageError(f"job {job['name']}: the monitor step's output holds no retrain.json")
            results.mkdir(parents=True, exist_ok=True)
            for item in downloaded.rglob("*"):
                if item.is_file():
                    target = results / item.relative_to(downloaded)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(item, target)
        print(f"downloaded the monitor step's output of {job['name']} to {results}")


def check_registry(record: dict, client: Any, settings: Settings) -> int:
    if "results" in record:  # a monitor run: what it selected, not what it registered (it registers nothing)
        results = Path(record["results"])
        download_results(record, client, results)
        return monitor_outcome(results)
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


def create_schedules(rendered: list[RenderedJob], settings: Settings) -> int:
    """Create or update the monitoring schedules in the workspace: the reference data assets first, then the
    model monitor that refers to them, and the JobSchedule of the monitor job."""
    client = ml_client(settings)
    for item in rendered:
        for asset in monitor.reference_assets(item.extra.get("references", [])):
            created = client.data.create_or_update(asset)
            print(f"data asset {created.name}:{created.version} (the model monitor's reference)")
        for key in ("model_monitor", "schedule"):
            if key in item.extra:
                schedule = client.schedules.begin_create_or_update(item.extra[key]).result()
                print(f"schedule {schedule.name} created or updated ({key.replace('_', ' ')})")
    return 0


def submit(
    rendered: list[RenderedJob],
    settings: Settings,
    wait: bool,
    state: Path | None = None,
    results: Path | None = None,
) -> int:
    client = ml_client(settings)
    record = submit_jobs(rendered, settings, client, state, results)
    if not wait:
        return 0
    return wait_jobs(record, client) or check_registry(record, client, settings)


MONITOR_OPTIONS = ("endpoint", "deployment", "collected", "actuals", "results", "schedules", "alert_email")


def option_problem(args: argparse.Namespace) -> str | None:
    """Options that do not go together, as one line (None when they do)."""
    if args.pipeline != "monitor":
        given = [f"--{name.replace('_', '-')}" for name in MONITOR_OPTIONS if getattr(args, name)]
        if given:
            return f"{', '.join(given)}: options of --pipeline monitor"
    if args.retrain_from and (args.pipeline != "train" or args.automl):
        return "--retrain-from selects models of the training pipeline (not --automl or another --pipeline)"
    if args.schedules and (args.submit_to or args.wait_for or args.check or args.wait):
        return "--schedules creates the schedules once; it does not submit, wait or check a job"
    if args.automl and args.pipeline != "train":
        return "--automl replaces the training pipeline; it does not go with --pipeline " + args.pipeline
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", required=True, help="declared use case(s) or group, comma-separated")
    parser.add_argument("--steps", help="comma-separated steps to run (default: all), e.g. prepare")
    parser.add_argument(
        "--pipeline",
        choices=("train", "batch-score", "monitor"),
        default="train",
        help="which pipeline: training (default), batch scoring (its input: local/batch/input, make batch-score) "
        "or monitoring (the monitor step on what the endpoint collected)",
    )
    parser.add_argument(
        "--retrain-from",
        type=Path,
        metavar="FILE",
        help="train: only the models a monitor run selected (its retrain.json)",
    )
    watch = parser.add_argument_group("--pipeline monitor")
    watch.add_argument("--endpoint", help="the online endpoint whose data collector's folder the monitor step reads")
    watch.add_argument("--deployment", help="only this deployment of --endpoint (default: every deployment)")
    watch.add_argument("--collected", help="the collected data instead: a local folder or an azureml:// folder")
    watch.add_argument("--actuals", help="actuals to join to the predictions: a local folder or an azureml:// folder")
    watch.add_argument(
        "--results",
        type=Path,
        help="where --check downloads the monitor step's output (default: <LOCAL_DIR>/monitoring/azure)",
    )
    watch.add_argument(
        "--schedules",
        action="store_true",
        help="the Azure ML schedules instead of a job: a JobSchedule of the monitor job and a model monitor of the "
        "endpoint's deployment (written with --dry-run, else created or updated)",
    )
    watch.add_argument(
        "--cron", default=monitor.DAILY, help=f"when the schedules run, UTC (default: {monitor.DAILY!r})"
    )
    watch.add_argument(
        "--alert-email", action="append", default=[], metavar="ADDRESS", help="the model monitor's alert e-mails"
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
    problem = option_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
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
        try:
            return wait_jobs(record, client) if args.wait_for else check_registry(record, client, settings)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
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
    if args.schedules:
        return create_schedules(rendered, settings)
    return submit(rendered, settings, args.wait and not args.submit_to, args.submit_to, args.results)


if __name__ == "__main__":
    sys.exit(main())
