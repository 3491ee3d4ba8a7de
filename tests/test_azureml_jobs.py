"""Azure ML v2 jobs, offline: the SDK's own validation, the dry-run YAML, and the cloud command lines run locally.

Nothing here reaches Azure. What is checked: every job object passes `_validate()` (the SDK's schema checks),
the YAML written by --dry-run loads back with `load_job`, and each command step's cloud command line, with its
`${{inputs.x}}` / `${{outputs.y}}` placeholders replaced by local folders, gives what the local runner gives.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ml_service.pipelines.azureml import builder, environment, registry_check
from ml_service.pipelines.azureml.job_yaml import load_back, write_job_yaml
from ml_service.pipelines.azureml.run_pipeline import parallel_settings
from ml_service.pipelines.catalog import training_pipeline
from ml_service.pipelines.definition import PIPELINE_INPUT, Binding, PipelineSpec, StepSpec
from tests.conftest import REPO_ROOT, run_module, seed_store

MODULE = "ml_service.pipelines.azureml.run_pipeline"
PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z_]\w*)\}\}")


@pytest.fixture(scope="module")
def env():
    return environment.build_environment(REPO_ROOT, "mlops-template-env")


@pytest.fixture(scope="module")
def code(tmp_path_factory):
    return environment.stage_code(REPO_ROOT, tmp_path_factory.mktemp("aml") / "code")


def pipeline_job(spec: PipelineSpec, env, code, experiment_name: str = "t", **options):
    """The spec as an Azure ML pipeline job, its inputs the spec's default files in this repository."""
    inputs = {name: REPO_ROOT / path for name, path in spec.inputs.items()}
    return builder.build_pipeline_job(
        spec,
        code=code,
        environment=env,
        inputs=inputs,
        compute="cpu-cluster",
        experiment_name=experiment_name,
        **options,
    )


def diabetes_job(env, code):
    spec = training_pipeline("diabetes_regression")
    return spec, pipeline_job(spec, env, code)


def parallel_spec() -> PipelineSpec:
    """A small pipeline with a many-models step, independent of any use case."""
    prepare = StepSpec(
        "prep", "ml_service.pipelines.steps.ff_prepare", "plan", {"config": Binding(PIPELINE_INPUT, "config")}
    )
    train = StepSpec(
        "fit",
        "ml_service.pipelines.steps.ff_train",
        "train many",
        {"config": Binding(PIPELINE_INPUT, "config"), "prepared": Binding("prep", "output")},
        outputs=("output",),
        parameters={"error_threshold": "3"},
        kind="parallel",
    )
    return PipelineSpec("par", "parallel test", {"config": "ff/pipeline_config.json"}, (prepare, train))


# --- pure parts ------------------------------------------------------------------------------------


def test_runtime_requirements_are_the_locked_runtime_closure():
    reqs = environment.runtime_requirements(REPO_ROOT / "requirements.lock", REPO_ROOT / "pyproject.toml")
    names = {r.split("==")[0].lower() for r in reqs}
    lock = (REPO_ROOT / "requirements.lock").read_text()
    assert {"azure-ai-ml", "pandas", "scikit-learn", "mlflow-skinny", "flaml", "azureml-mlflow"} <= names
    assert not names & {"pytest", "ruff", "checkov", "check-jsonschema", "pytest-cov", "pywin32"}
    for requirement in reqs:  # exactly the pins of the lock
        assert re.search(rf"^{re.escape(requirement)}(\s|;|$)", lock, re.M), requirement


def test_code_snapshot_leaves_out_secrets_and_local_state(tmp_path):
    root = tmp_path / "repo"
    for rel in ("ml_service/a.py", ".env", ".venv/lib/x.py", "local/mlflow.db", ".git/HEAD", "x/__pycache__/a.pyc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    staged = environment.stage_code(root, tmp_path / "staged")
    files = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert files == ["ml_service/a.py"]
    with pytest.raises(ValueError, match="outside the repository"):
        environment.stage_code(root, root / "ml_service" / "code")


def test_command_line_keeps_placeholders_and_quotes_the_rest():
    line = builder.command_line(["python", "-m", "m", "--x", "${{inputs.x}}", "--y", "a b"])
    assert line == "python -m m --x ${{inputs.x}} --y 'a b'"


def test_parallel_settings_from_ff_config_and_checks():
    settings = parallel_settings(REPO_ROOT, "ff")
    raw = json.loads((REPO_ROOT / "ff" / "pipeline_config.json").read_text()).get("parallel", {})
    for key, value in raw.items():
        if hasattr(settings, key):
            assert getattr(settings, key) == value
    assert parallel_settings(REPO_ROOT, "diabetes_regression") == builder.ParallelSettings()
    with pytest.raises(ValueError, match="mini_batch_size"):
        builder.ParallelSettings.from_mapping({"mini_batch_size": 0})
    with pytest.raises(ValueError, match="instance_count"):
        builder.ParallelSettings.from_mapping({"instance_count": "2"})


def test_registry_check_sees_new_version_or_moved_alias():
    s = registry_check.ModelState
    before = {"a": s(1, "1"), "b": s(None, None)}
    assert registry_check.registered(before, {"a": s(1, "1"), "b": s(None, None)}) == []
    assert registry_check.registered(before, {"a": s(2, "1"), "b": s(None, None)}) == ["a"]
    assert registry_check.registered(before, {"a": s(1, "1"), "b": s(1, "1")}) == ["b"]
    assert registry_check.registered(before, {"a": s(1, None), "b": s(None, None)}) == ["a"]


# --- the SDK's own validation ----------------------------------------------------------------------


def test_diabetes_pipeline_passes_sdk_validation(env, code):
    spec, job = diabetes_job(env, code)
    assert builder.validation_errors(job) == {}
    assert list(job.jobs) == [s.name for s in spec.steps]
    for step in spec.steps:
        node = job.jobs[step.name]
        assert node.component.command == builder.step_command(step)
        assert node.component.command.startswith(f"python -m {step.module} ")
    register = job._to_dict()["jobs"]["register"]["inputs"]
    assert register["trained"]["path"] == "${{parent.jobs.train.outputs.output}}"
    assert register["decision"]["path"] == "${{parent.jobs.evaluate.outputs.output}}"


def test_parallel_step_becomes_a_parallel_job(env, code):
    spec = parallel_spec()
    settings = builder.ParallelSettings(
        mini_batch_size=7, instance_count=3, max_concurrency_per_instance=4, error_threshold=2, retries=1, timeout_s=90
    )
    job = pipeline_job(spec, env, code, parallel=settings)
    assert builder.validation_errors(job) == {}
    fit = job._to_dict()["jobs"]["fit"]
    assert fit["type"] == "parallel"
    assert fit["input_data"] == "${{inputs.prepared}}"
    assert fit["mini_batch_size"] == "7" and fit["resources"]["instance_count"] == 3
    assert fit["max_concurrency_per_instance"] == 4 and fit["error_threshold"] == 2
    assert fit["retry_settings"] == {"max_retries": 1, "timeout": 90}
    assert fit["task"]["entry_script"] == builder.PARALLEL_ENTRY_SCRIPT
    # The output option is renamed: the parallel driver parses its own --output from the same command line.
    args = "--error-threshold 3 --config ${{inputs.config}} --prepared ${{inputs.prepared}} "
    assert fit["task"]["program_arguments"] == args + "--mlops-output ${{outputs.output}}"
    assert (code / builder.PARALLEL_ENTRY_SCRIPT).is_file()


def test_no_step_is_reused_from_an_earlier_run_unless_named_cacheable(env, code):
    """Azure ML reuses a deterministic step whose code and inputs are unchanged: a rerun of the same commit would
    then reuse evaluate's old decision and register's old answer, and register nothing."""
    for spec in (training_pipeline("diabetes_regression"), training_pipeline("ff")):
        job = pipeline_job(spec, env, code)
        assert {n: node.component.is_deterministic for n, node in job.jobs.items()} == {
            s.name: False for s in spec.steps
        }
    spec = training_pipeline("diabetes_regression")
    job = pipeline_job(spec, env, code, cacheable=["prepare"])
    assert [n for n, node in job.jobs.items() if node.component.is_deterministic] == ["prepare"]


def test_the_built_job_carries_the_build_lineage_to_every_step(env, code):
    lineage = {"BUILD_ID": "417", "BUILD_URI": "https://dev.azure.com/o/p/_build/results?buildId=417"}
    for spec in (training_pipeline("diabetes_regression"), parallel_spec()):
        job = pipeline_job(spec, env, code, environment_variables={**lineage, "GIT_COMMIT": "abc123"})
        assert builder.validation_errors(job) == {}
        for name, node in job._to_dict()["jobs"].items():
            assert lineage.items() <= node["environment_variables"].items(), name
            assert node["environment_variables"]["GIT_COMMIT"] == "abc123", name


def test_run_pipeline_passes_ci_lineage_and_the_parallel_environment(tmp_path, monkeypatch):
    """What `run_pipeline` builds from the CI's variables: BUILD_ID, BUILD_URI and the commit on every step (the
    code snapshot has no .git), and the parallel step in its own environment with the driver's packages."""
    from ml_service.pipelines.azureml.run_pipeline import main

    monkeypatch.setenv("BUILD_ID", "417")
    monkeypatch.setenv("BUILD_URI", "https://ci.example/417")
    monkeypatch.setenv("BUILD_SOURCEVERSION", "0123abcd")
    assert main(["--use-case", "ff", "--dry-run", "--output", str(tmp_path)]) == 0
    loaded = load_back(tmp_path / "pipeline.yml")
    for name, node in loaded.jobs.items():
        variables = node.environment_variables
        assert variables["BUILD_ID"] == "417" and variables["BUILD_URI"] == "https://ci.example/417", name
        assert variables["GIT_COMMIT"] == "0123abcd", name
    assert not (tmp_path / "code" / ".git").exists()
    train = loaded._to_dict()["jobs"]["train"]["task"]["environment"]["conda_file"]["dependencies"][-1]["pip"]
    assert {"azureml-core", "azureml-dataset-runtime", "setuptools"} <= {r.split("==")[0] for r in train}
    setuptools = next(r for r in train if r.startswith("setuptools=="))
    assert int(setuptools.split("==")[1].split(".")[0]) < 81  # still ships pkg_resources, which the driver imports
    for name in ("prepare", "evaluate", "register"):
        pip = {r.split("==")[0] for r in loaded.jobs[name].component.environment.conda_file["dependencies"][-1]["pip"]}
        assert "azureml-core" not in pip, name


@pytest.mark.slow
def test_parallel_environment_lock_resolves_on_python_3_11(tmp_path):
    """The parallel lock is what `uv pip compile` gives for the project plus the driver's packages on 3.11
    (reads PyPI, not Azure): resolving again from it changes no pin."""
    lock = REPO_ROOT / environment.PARALLEL_LOCK
    copy = tmp_path / "parallel.lock"
    copy.write_text(lock.read_text())
    uv = Path(sys.executable).parent / "uv"
    command = [str(uv), "pip", "compile", "pyproject.toml", environment.PARALLEL_DRIVER, "-p", "3.11"]
    command += ["--python-platform", "x86_64-manylinux_2_28", "-q", "-o", str(copy)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert environment.locked_requirements(copy) == environment.locked_requirements(lock)
    pins = {r.split("==")[0] for r in environment.locked_requirements(lock)}
    assert {"azureml-core", "azureml-dataset-runtime", "setuptools", "azure-ai-ml", "scikit-learn"} <= pins


def test_nothing_promoted_is_a_success_published_for_later_stages(tmp_path, monkeypatch, capsys):
    from ml_service.pipelines.azureml.run_pipeline import outcome

    out = tmp_path / "github_output"
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    before = {"m": [3, "3"]}
    assert outcome(["m"], before, {"m": [3, "3"]}) == 0
    printed = capsys.readouterr().out
    assert "nothing promoted" in printed
    assert "##vso[task.setvariable variable=registered;isOutput=true]false" in printed
    assert outcome(["m"], before, {"m": [4, "4"]}) == 0
    assert "##vso[task.setvariable variable=registered;isOutput=true]true" in capsys.readouterr().out
    assert out.read_text() == "registered=false\nregistered=true\n"


def test_wait_and_check_read_a_state_file_or_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("RESOURCE_GROUP", "rg")
    monkeypatch.setenv("WORKSPACE_NAME", "ws")
    bad = tmp_path / "state.json"
    bad.write_text("{}")
    result = run_module(MODULE, "--use-case", "ff", "--check", str(bad))
    assert result.returncode == 2 and "--submit-to" in result.stderr and len(result.stderr.splitlines()) == 1
    result = run_module(MODULE, "--use-case", "ff", "--wait-for", str(tmp_path / "missing.json"))
    assert result.returncode == 2


def test_a_long_wait_in_azure_devops_signs_in_with_a_renewing_credential(monkeypatch):
    from azure.identity import AzurePipelinesCredential, DefaultAzureCredential

    from ml_service.pipelines.azureml.run_pipeline import azure_credential

    for suffix in ("TENANT_ID", "CLIENT_ID", "SERVICE_CONNECTION_ID"):
        monkeypatch.setenv(f"AZURESUBSCRIPTION_{suffix}", "00000000-0000-0000-0000-000000000001")
    monkeypatch.delenv("SYSTEM_ACCESSTOKEN", raising=False)
    assert isinstance(azure_credential(), DefaultAzureCredential)  # no System.AccessToken mapped: the CLI login
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "token")
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/o/p/_apis/distributedtask/hubs/build/plans/x")
    assert isinstance(azure_credential(), AzurePipelinesCredential)


def test_a_bad_value_fails_sdk_validation(env, code):
    spec = parallel_spec()
    job = pipeline_job(spec, env, code)
    job.jobs["fit"].logging_level = "LOUD"
    try:
        errors = builder.validation_errors(job)
    except Exception as exc:  # noqa: BLE001 - the SDK reports some schema errors by raising
        errors = {"raised": str(exc)}
    assert "LOUD" in json.dumps(errors) or "logging_level" in json.dumps(errors)


def test_ff_pipeline_passes_sdk_validation(env, code):
    spec = training_pipeline("ff")
    job = pipeline_job(spec, env, code, "ff", parallel=parallel_settings(REPO_ROOT, "ff"))
    assert builder.validation_errors(job) == {}
    kinds = {s.name: job._to_dict()["jobs"][s.name]["type"] for s in spec.steps}
    assert kinds == {s.name: s.kind for s in spec.steps}
    only = pipeline_job(spec, env, code, "ff", steps=["prepare"])
    assert list(only.jobs) == ["prepare"] and builder.validation_errors(only) == {}
    with pytest.raises(ValueError, match="select it too"):
        builder.select_steps(spec, ["train"])


def test_ff_automl_jobs_pass_sdk_validation(tmp_path):
    from ff.config import load_pipeline_config
    from ml_service.pipelines.azureml import ff_automl  # the ff sample's own module (bootstrap --drop-ff drops it)

    config = load_pipeline_config(REPO_ROOT / "ff" / "pipeline_config.json")
    for case in config.use_cases:
        data = tmp_path / case.model_name
        data.mkdir()
        (data / "MLTable").write_text(ff_automl.MLTABLE)
        job = ff_automl.build_automl_job(case, data, "cpu-cluster", "ff-automl")
        assert ff_automl.automl_validation_errors(job) == {}, case.model_name
        assert job.task_type.value.lower() == case.task and job.target_column_name == case.label
        assert job.primary_metric.value == ff_automl.PRIMARY_METRIC[case.automl.metric]
        assert job.limits.timeout_minutes >= ff_automl.MIN_TIMEOUT_MINUTES
        allowed = [a.value if hasattr(a, "value") else a for a in job.training.allowed_training_algorithms]
        assert allowed == ff_automl.allowed_algorithms(case.automl.estimators)
        if case.task == "forecasting":
            fs = job.forecasting_settings
            assert fs.time_column_name == case.time_column and fs.forecast_horizon == case.horizon
            assert (fs.time_series_id_column_names or []) == list(case.partition_columns)
        path = write_job_yaml(job, tmp_path / f"{case.model_name}.yml")
        loaded = load_back(path)
        assert loaded.target_column_name == case.label
        if case.partition_columns:
            assert loaded.forecasting_settings.time_series_id_column_names == list(case.partition_columns)


# --- the command line -------------------------------------------------------------------------------


def test_missing_workspace_exits_2_with_one_line():
    result = run_module(MODULE, "--use-case", "diabetes_regression", env={"AZURE_SUBSCRIPTION_ID": ""})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    for name in ("AZURE_SUBSCRIPTION_ID", "RESOURCE_GROUP", "WORKSPACE_NAME"):
        assert name in lines[0]


def test_dry_run_writes_yaml_that_loads_back(tmp_path, env, code):
    from ml_service.pipelines.azureml.run_pipeline import main

    assert main(["--use-case", "diabetes_regression", "--dry-run", "--output", str(tmp_path)]) == 0
    path = tmp_path / "pipeline.yml"
    text = path.read_text()
    assert "azureml:/" not in text and str(REPO_ROOT) not in text  # no absolute local paths left
    loaded = load_back(path)
    assert builder.validation_errors(loaded) == {}
    spec, built = diabetes_job(env, code)
    for step in spec.steps:
        assert loaded.jobs[step.name].component.command == built.jobs[step.name].component.command
    assert (tmp_path / "code" / "ml_service" / "pipelines" / "steps" / "prepare.py").is_file()
    assert not (tmp_path / "code" / ".env").exists() and not (tmp_path / "code" / ".venv").exists()
    assert (tmp_path / "inputs" / "raw_data" / "diabetes.csv").is_file()


def _replacer(values: dict[tuple[str, str], str]):
    return lambda match: shlex.quote(values[(match.group(1), match.group(2))])


def _run_cloud_commands(spec: PipelineSpec, job, raw: Path, out: Path, env_vars: dict[str, str]) -> None:
    """Each command step's cloud command line, placeholders replaced by local folders, as a real process."""
    produced: dict[str, dict[str, Path]] = {}
    for step in spec.steps:
        inputs = {
            key: str(raw) if b.source == PIPELINE_INPUT else str(produced[b.source][b.name])
            for key, b in step.inputs.items()
        }
        outputs = {name: out / step.name / name for name in step.outputs}
        for folder in outputs.values():
            folder.mkdir(parents=True)
        values = {("inputs", k): v for k, v in inputs.items()} | {("outputs", k): str(v) for k, v in outputs.items()}
        line = PLACEHOLDER.sub(_replacer(values), job.jobs[step.name].component.command)
        argv = shlex.split(line)
        assert argv[:2] == ["python", "-m"]
        result = subprocess.run(
            [sys.executable, *argv[1:]], cwd=REPO_ROOT, env=env_vars, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{step.name}: {result.stderr}"
        produced[step.name] = outputs


@pytest.mark.slow
def test_cloud_command_lines_give_the_local_runners_result(tmp_path, monkeypatch, empty_mlflow_db, env, code):
    import os

    from ml_service.pipelines.run_train_pipeline import run_pipeline

    spec, job = diabetes_job(env, code)
    raw = REPO_ROOT / spec.inputs["raw_data"]
    # The local runner, in its own store.
    local = tmp_path / "local-store"
    seed_store(local, empty_mlflow_db)
    monkeypatch.setenv("LOCAL_DIR", str(local))
    reference = run_pipeline(spec, tmp_path / "runner", project_root=REPO_ROOT, in_process=True)
    # The cloud command lines, in another empty store.
    cloud = tmp_path / "cloud-store"
    seed_store(cloud, empty_mlflow_db)
    env_vars = {**os.environ, "LOCAL_DIR": str(cloud), "MLFLOW_TRACKING_URI": "", "PYTHONPATH": str(REPO_ROOT)}
    for name in ("BUILD_ID", "BUILD_URI", "BUILD_SOURCEVERSION", "GITHUB_SHA"):
        env_vars.pop(name, None)
    # What the job gives each step (builder environment_variables), run outside any git checkout.
    lineage = {"BUILD_ID": "417", "BUILD_URI": "https://ci.example/417", "GIT_COMMIT": "0123abcd"}
    cloud_job = pipeline_job(spec, env, code, environment_variables=lineage)
    _run_cloud_commands(spec, cloud_job, raw, tmp_path / "cloud", {**env_vars, **lineage})

    def read(root: Path, step: str, name: str):
        return json.loads((root / step / "output" / name).read_text())

    runner_dir = tmp_path / "runner"
    assert (tmp_path / "cloud/prepare/output/prepared.csv").read_bytes() == (
        reference["prepare"]["output"] / "prepared.csv"
    ).read_bytes()
    assert (
        read(tmp_path / "cloud", "train", "train.json")["metrics"] == read(runner_dir, "train", "train.json")["metrics"]
    )
    assert read(tmp_path / "cloud", "evaluate", "decision.json") == read(runner_dir, "evaluate", "decision.json")
    assert read(tmp_path / "cloud", "register", "registered.json") == read(runner_dir, "register", "registered.json")
    from ml_service.registry.mlflow_registry import connect
    from ml_service.util.env_variables import load_settings

    monkeypatch.setenv("LOCAL_DIR", str(cloud))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    registered = read(tmp_path / "cloud", "register", "registered.json")
    tags = connect(load_settings()).get_model_version(registered["model_name"], registered["version"]).tags
    assert tags["build_id"] == "417" and tags["build_uri"] == "https://ci.example/417"
    assert tags["git_commit"] == "0123abcd"
