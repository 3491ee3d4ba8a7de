"""Monitoring in Azure ML, offline: the monitor step as a one-step pipeline job, its JobSchedule, the model
monitor of the online endpoint, and retraining only what a monitor run selected.

Nothing here reaches Azure. What is checked: the job passes the SDK's `_validate()` and its YAML loads back with
`load_job`; the schedule YAML and the model monitor's load back with the SDK's schemas and give a REST body
(`_to_rest_object()`, which checks the model monitor's Spark runtime and signals); the command the job runs is
exactly the monitor step's command line (docs/monitoring.md, "Monitoring in Azure"); the retrain file becomes the
prepare step's input. Only one test replaces anything: the Azure ML client of `--check` (the network edge), said there.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from ml_service.pipelines.azureml import builder, monitor, run_pipeline
from ml_service.pipelines.azureml.job_yaml import load_back
from tests.conftest import REPO_ROOT
from tests.fixtures.projects import toy_config

ENDPOINT = "scoring-prod"


@pytest.fixture
def cloud_project(project) -> Path:
    """Two fixture use cases (partitioned `toy`, single `single`) with what the Azure ML runner needs."""
    root = project({"toy": toy_config(), "single": toy_config(partitioned=False)})
    shutil.copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
    (root / "environment_setup").mkdir(exist_ok=True)
    for name in ("parallel-requirements.lock", "parallel-driver.in"):
        shutil.copy(REPO_ROOT / "environment_setup" / name, root / "environment_setup" / name)
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(
        text.replace("[tool.mlops", f"dependencies = {json.dumps(dependencies)}\n\n[tool.mlops", 1)
    )
    return root


def dry_run(out: Path, *args: str) -> int:
    return run_pipeline.main(["--use-case", "toy,single", *args, "--dry-run", "--output", str(out)])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# --- the monitor job ----------------------------------------------------------------------------------------


def test_the_job_runs_the_monitor_steps_command_on_the_endpoints_collected_data(cloud_project, tmp_path):
    out = tmp_path / "dry"
    assert dry_run(out, "--pipeline", "monitor", "--endpoint", ENDPOINT) == 0
    job = load_back(out / "pipeline.yml")
    assert builder.validation_errors(job) == {}
    assert list(job.jobs) == ["monitor"]
    step = job.jobs["monitor"]
    assert shlex.split(step.component.command) == [
        "python",
        "-m",
        "ml_service.pipelines.steps.monitor",
        "--use-case",
        "toy,single",
        "--collected",
        "${{inputs.collected}}",
        "--output",
        "${{outputs.output}}",
    ]
    assert step.component.is_deterministic is False  # the registry's production model changes between runs
    # every deployment of the endpoint: both colours of blue/green, before and after a swap; mounted, not copied
    assert job._to_dict()["inputs"]["collected"] == {
        "type": "uri_folder",
        "mode": "ro_mount",
        "path": f"azureml://datastores/workspaceblobstore/paths/modelDataCollector/{ENDPOINT}",
    }
    assert list(step.outputs) == ["output"]
    assert (out / "code" / "toyuc" / "model.py").is_file()


def test_one_deployment_and_actuals(cloud_project, tmp_path):
    out = tmp_path / "dry"
    actuals = "azureml://datastores/workspaceblobstore/paths/actuals/energy/"
    args = ("--pipeline", "monitor", "--endpoint", ENDPOINT, "--deployment", "green", "--actuals", actuals)
    assert dry_run(out, *args) == 0
    job = load_back(out / "pipeline.yml")
    assert builder.validation_errors(job) == {}
    assert shlex.split(job.jobs["monitor"].component.command)[3:] == [
        "--use-case",
        "toy,single",
        "--collected",
        "${{inputs.collected}}",
        "--actuals",
        "${{inputs.actuals}}",
        "--output",
        "${{outputs.output}}",
    ]
    inputs = job._to_dict()["inputs"]
    assert inputs["collected"]["path"].endswith(f"/modelDataCollector/{ENDPOINT}/green")
    assert inputs["actuals"] == {"type": "uri_folder", "mode": "ro_mount", "path": actuals}


def test_a_local_collected_folder_is_uploaded_with_the_job(cloud_project, tmp_path):
    collected = tmp_path / "collected" / "2026" / "12" / "01" / "22"
    collected.mkdir(parents=True)
    (collected / "host-1-0.jsonl").write_text('{"model_name": "toy/store=s00"}\n')
    out = tmp_path / "dry"
    assert dry_run(out, "--pipeline", "monitor", "--collected", str(tmp_path / "collected")) == 0
    document = yaml.safe_load((out / "pipeline.yml").read_text())
    assert document["inputs"]["collected"] == {"type": "uri_folder", "path": "./inputs/collected"}
    assert (out / "inputs" / "collected" / "2026" / "12" / "01" / "22" / "host-1-0.jsonl").is_file()


def test_the_default_folder_is_where_the_sdk_registers_a_deployments_collections():
    """The SDK registers each collection of a deployment's data collector as a data asset at
    DEFAULT_MDC_PATH/<endpoint>/<deployment>/<collection>: the monitor job reads its parent folder."""
    from azure.ai.ml.constants._deployment import DEFAULT_MDC_PATH

    assert monitor.DATA_COLLECTOR_ROOT == DEFAULT_MDC_PATH
    for collection in monitor.COLLECTIONS:
        registered = f"{DEFAULT_MDC_PATH}/{ENDPOINT}/blue/{collection}"
        assert registered.startswith(monitor.collected_path(ENDPOINT, "blue") + "/")
        assert registered.startswith(monitor.collected_path(ENDPOINT) + "/")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--pipeline", "monitor"), "needs --endpoint NAME"),
        (("--pipeline", "monitor", "--endpoint", "9lives"), "'9lives' is not an Azure ML endpoint name"),
        (("--pipeline", "monitor", "--endpoint", "$(ENDPOINT_NAME)"), "is not an Azure ML endpoint name"),
        (("--pipeline", "monitor", "--collected", "no/such/folder"), "pipeline input no/such/folder does not exist"),
        (("--endpoint", ENDPOINT), "--endpoint: options of --pipeline monitor"),
        (("--pipeline", "monitor", "--endpoint", ENDPOINT, "--schedules"), "needs --deployment NAME"),
        (("--pipeline", "monitor", "--endpoint", ENDPOINT, "--schedules", "--cron", "daily"), "5-field cron"),
        (
            (
                "--pipeline",
                "monitor",
                "--endpoint",
                ENDPOINT,
                "--schedules",
                "--deployment",
                "x-1",
                "--alert-email",
                "o",
            ),
            "'o' is not an e-mail address",
        ),
    ],
)
def test_bad_monitor_arguments_exit_2_with_one_line(cloud_project, tmp_path, capsys, args, expected):
    assert dry_run(tmp_path / "dry", *args) == 2
    assert expected in error_line(capsys)
    assert not (tmp_path / "dry" / "pipeline.yml").exists()


# --- the schedules --------------------------------------------------------------------------------------------


def test_the_schedules_load_back_with_the_sdk(cloud_project, tmp_path):
    from azure.ai.ml.entities import JobSchedule, MonitorSchedule
    from azure.ai.ml.entities._load_functions import load_data, load_schedule

    out = tmp_path / "dry"
    args = ("--pipeline", "monitor", "--endpoint", ENDPOINT, "--deployment", "blue", "--schedules")
    assert dry_run(out, *args, "--alert-email", "ops@example.com") == 0

    schedule = load_schedule(str(out / "schedule.yml"))
    assert isinstance(schedule, JobSchedule) and schedule.name == "toy-single-monitoring"
    assert schedule.trigger.expression == monitor.DAILY and schedule._validate().passed
    job = load_back(out / "pipeline.yml")
    assert schedule.create_job.jobs["monitor"].component.command == job.jobs["monitor"].component.command
    rest = schedule._to_rest_object().as_dict()["properties"]
    assert rest["trigger"] == {"triggerType": "Cron", "expression": "0 5 * * *", "timeZone": "UTC"}
    assert rest["action"]["actionType"] == "CreateJob"

    model_monitor = load_schedule(str(out / "model-monitor.yml"))
    assert isinstance(model_monitor, MonitorSchedule)
    definition = model_monitor.create_monitor
    assert definition.monitoring_target.endpoint_deployment_id == f"azureml:{ENDPOINT}:blue"
    assert definition.alert_notification.emails == ["ops@example.com"]
    signals = definition.monitoring_signals
    assert sorted(signals) == ["data_drift_single", "data_drift_toy", "prediction_drift_single", "prediction_drift_toy"]
    for name in ("toy", "single"):
        drift = signals[f"data_drift_{name}"]
        # the request's inputs: the partition column (store) and the label (y) are not features
        assert drift.features == ["colour", "x"] and drift.feature_type_override == {"colour": "categorical"}
        for signal in (drift, signals[f"prediction_drift_{name}"]):
            reference = signal.reference_data
            assert reference.data_context == "training" and reference.data_column_names == {"target_column": "y"}
            asset = load_data(str(out / f"reference-{name}-training.yml"))
            assert reference.input_data.path == f"{asset.name}:{asset.version}"  # the loader drops "azureml:"
            assert asset.type == "mltable" and (out / "reference" / name / "MLTable").is_file()
    rest = model_monitor._to_rest_object().as_dict()["properties"]["action"]["monitorDefinition"]
    assert rest["monitoringTarget"] == {"taskType": "regression", "deploymentId": f"azureml:{ENDPOINT}:blue"}
    assert rest["computeConfiguration"]["runtimeVersion"] == monitor.SPARK_RUNTIME
    assert rest["signals"]["data_drift_toy"]["features"] == {"features": ["colour", "x"], "filterType": "FeatureSubset"}


def test_the_reference_data_is_the_training_data_versioned_by_content(cloud_project, tmp_path):
    import pandas as pd

    out = tmp_path / "dry"
    args = ("--pipeline", "monitor", "--endpoint", ENDPOINT, "--deployment", "blue", "--schedules")
    assert dry_run(out, *args) == 0
    table = pd.read_csv(out / "reference" / "toy" / "data.csv")
    assert list(table.columns) == ["store", "colour", "x", "y"] and len(table) == 6 * 16
    version = yaml.safe_load((out / "reference-toy-training.yml").read_text())["version"]
    assert dry_run(tmp_path / "again", *args) == 0
    assert yaml.safe_load((tmp_path / "again" / "reference-toy-training.yml").read_text())["version"] == version
    data = cloud_project / "data" / "toy.csv"
    data.write_text(data.read_text().replace(",1.", ",2.", 1))
    assert dry_run(tmp_path / "changed", *args) == 0
    assert yaml.safe_load((tmp_path / "changed" / "reference-toy-training.yml").read_text())["version"] != version


def test_an_unsupported_spark_runtime_is_caught_offline(cloud_project, tmp_path, capsys, monkeypatch):
    """The runtime Azure's examples still show (3.3) is refused by the SDK's REST conversion: the check is real."""
    monkeypatch.setattr(monitor, "SPARK_RUNTIME", "3.3")
    args = ("--pipeline", "monitor", "--endpoint", ENDPOINT, "--deployment", "blue", "--schedules")
    assert dry_run(tmp_path / "dry", *args) == 2
    assert "runtime version must be one of" in error_line(capsys)


# --- retraining only what a monitor run selected ---------------------------------------------------------------


def write_retrain(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_retrain_from_plans_only_the_selected_models(cloud_project, tmp_path, monkeypatch):
    retrain = write_retrain(tmp_path / "retrain.json", {"toy": ["store=s01", "store=s04"], "single": []})
    out = tmp_path / "dry"
    assert dry_run(out, "--retrain-from", str(retrain)) == 0
    monkeypatch.chdir(out)  # the SDK resolves the parallel task's `code: ./code` against the current folder
    job = load_back(out / "pipeline.yml")
    assert builder.validation_errors(job) == {}
    assert list(job.jobs) == ["prepare", "train", "evaluate", "register"]
    assert shlex.split(job.jobs["prepare"].component.command) == [
        "python",
        "-m",
        "ml_service.pipelines.steps.prepare",
        "--use-case",
        "toy",  # `single` has nothing to retrain
        "--retrain-from",
        "${{inputs.retrain_from}}",
        "--output",
        "${{outputs.output}}",
    ]
    document = yaml.safe_load((out / "pipeline.yml").read_text())
    assert document["inputs"]["retrain"] == {"type": "uri_file", "path": "./inputs/retrain/retrain.json"}
    assert json.loads((out / "inputs" / "retrain" / "retrain.json").read_text()) == json.loads(retrain.read_text())


def test_nothing_selected_builds_no_job(cloud_project, tmp_path, capsys):
    retrain = write_retrain(tmp_path / "retrain.json", {"toy": [], "single": []})
    assert dry_run(tmp_path / "dry", "--retrain-from", str(retrain)) == 0
    assert "nothing to retrain" in capsys.readouterr().out
    assert not (tmp_path / "dry" / "pipeline.yml").exists()


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        ({"other": ["k"]}, (), "names other, not among the use cases toy, single"),
        (["toy"], (), "expected {"),
        ({"toy": "store=s01"}, (), "expected {"),
        ({"toy": ["store=s01"]}, ("--pipeline", "batch-score"), "--retrain-from selects models of the training"),
    ],
)
def test_a_bad_retrain_file_exits_2_with_one_line(cloud_project, tmp_path, capsys, content, args, expected):
    retrain = write_retrain(tmp_path / "retrain.json", content)
    assert dry_run(tmp_path / "dry", "--retrain-from", str(retrain), *args) == 2
    assert expected in error_line(capsys)


# --- what a monitor run tells the CI -----------------------------------------------------------------------------


def test_the_outcome_of_a_monitor_run_is_published_for_the_retraining_stage(tmp_path, monkeypatch, capsys):
    out = tmp_path / "github_output"
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    results = tmp_path / "results"
    results.mkdir()
    write_retrain(results / "retrain.json", {"toy": ["store=s01"], "single": []})
    assert run_pipeline.monitor_outcome(results) == 0
    printed = capsys.readouterr().out
    assert "retrain: toy (1 model(s))" in printed
    assert "##vso[task.setvariable variable=retrain;isOutput=true]true" in printed
    write_retrain(results / "retrain.json", {"toy": [], "single": []})
    assert run_pipeline.monitor_outcome(results) == 0
    assert "##vso[task.setvariable variable=retrain;isOutput=true]false" in capsys.readouterr().out
    assert out.read_text() == "retrain=true\nretrain=false\n"
    (results / "retrain.json").unlink()
    assert run_pipeline.monitor_outcome(results) == 1
    assert "not a retrain file written by the monitor step" in error_line(capsys)


def test_check_downloads_the_monitor_steps_output(tmp_path, monkeypatch, capsys):
    """The Azure ML client is replaced here (the network edge): `jobs.list` answers the pipeline's one child job
    and `jobs.download` writes a named output where the SDK writes it (<path>/named-outputs/<name>/)."""
    produced = {"monitor.json": "{}", "retrain.json": json.dumps({"toy": ["store=s02"]}), "report.html": "<html/>"}
    calls = []

    class Jobs:
        def list(self, parent_job_name):
            calls.append(("list", parent_job_name))
            return [type("Child", (), {"name": f"{parent_job_name}-monitor"})()]

        def download(self, name, output_name, download_path):
            calls.append(("download", name, output_name))
            folder = Path(download_path) / "named-outputs" / output_name
            folder.mkdir(parents=True)
            for file, text in produced.items():
                (folder / file).write_text(text)

    client = type("Client", (), {"jobs": Jobs()})()
    monkeypatch.setenv("TF_BUILD", "True")
    record = {"models": [], "before": {}, "jobs": [{"name": "job1", "rendered": "pipeline"}]}
    record["results"] = str(tmp_path / "r")
    assert run_pipeline.check_registry(record, client, None) == 0
    assert calls == [("list", "job1"), ("download", "job1-monitor", "output")]
    assert {p.name: p.read_text() for p in (tmp_path / "r").iterdir()} == produced
    assert "##vso[task.setvariable variable=retrain;isOutput=true]true" in capsys.readouterr().out
    # an output without retrain.json (a step that failed half-way) is an error, not the previous run's answer
    del produced["retrain.json"]
    with pytest.raises(run_pipeline.UsageError, match="holds no retrain.json"):
        run_pipeline.check_registry(record, client, None)


@pytest.mark.parametrize("kubernetes", [False, True])
def test_the_deployment_declares_the_collections_the_monitors_read(kubernetes):
    """Both monitors read the deployment's data collector: its `model_inputs` and `model_outputs` collections
    must be enabled."""
    from ml_service.scoring.deploy.online_endpoint import build_deployment

    deployment = build_deployment(ENDPOINT, "blue", "registry.example/scoring@sha256:" + "0" * 64, kubernetes)
    assert deployment.data_collector is not None
    collections = deployment.data_collector.collections
    for name in monitor.COLLECTIONS:
        assert name in collections and str(collections[name].enabled).lower() == "true", name
