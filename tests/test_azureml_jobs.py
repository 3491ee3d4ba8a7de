"""Azure ML v2 jobs of a fixture use case, offline: the SDK's own validation, the dry-run YAML, and the cloud command
lines run locally.

Nothing here reaches Azure. What is checked: the job objects pass `_validate()` (the SDK's schema checks), the YAML
written by --dry-run loads back with `load_job`, and each step's cloud command line (the parallel step's entry
script with its program arguments), placeholders replaced by local folders, gives what the local runner gives.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest

from ml_service.pipelines.azureml import builder, environment, parallel_entry, registry_check, run_pipeline
from ml_service.pipelines.azureml.job_yaml import load_back
from ml_service.pipelines.definition import PIPELINE_INPUT, training_pipeline
from ml_service.use_case import load_use_case
from tests.conftest import REPO_ROOT, forget_loaded_code, seed_store
from tests.fixtures.projects import toy_config

PLACEHOLDER = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z_]\w*)\}\}")
PARALLEL = {"mini_batch_size": 7, "instance_count": 3, "max_concurrency_per_instance": 4, "error_threshold": 2}


@pytest.fixture(scope="module")
def env():
    return environment.build_environment(REPO_ROOT, "mlops-template-env")


@pytest.fixture
def cloud_project(project) -> Path:
    """A fixture project with what the Azure ML runner needs of a project: the lock and its dependencies."""
    root = project(
        {
            "toy": toy_config(parallel={**PARALLEL, "retries": 1, "timeout_s": 90}),
            "single": toy_config(partitioned=False),
        }
    )
    shutil.copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (
        (root / "pyproject.toml")
        .read_text()
        .replace("[tool.mlops", f"dependencies = {json.dumps(dependencies)}\n\n[tool.mlops", 1)
    )
    (root / "pyproject.toml").write_text(text)
    return root


def toy_job(root: Path, env, tmp_path: Path, names=("toy",), **options):
    spec = training_pipeline(list(names), "-".join(names))
    code = environment.stage_code(root, tmp_path / "staged-code")
    use_cases = [load_use_case(n, root) for n in names]
    job = builder.build_pipeline_job(
        spec,
        code=code,
        environment=env,
        inputs={},
        compute="cpu-cluster",
        experiment_name="t",
        parallel=run_pipeline.parallel_settings(use_cases),
        **options,
    )
    return spec, job, code


# --- pure parts ------------------------------------------------------------------------------------


def test_runtime_requirements_are_the_locked_runtime_closure():
    reqs = environment.runtime_requirements(REPO_ROOT / "requirements.lock", REPO_ROOT / "pyproject.toml")
    names = {r.split("==")[0].lower() for r in reqs}
    lock = (REPO_ROOT / "requirements.lock").read_text()
    assert {"azure-ai-ml", "pandas", "scikit-learn", "mlflow-skinny", "azureml-mlflow"} <= names
    assert not names & {"pytest", "ruff", "checkov", "check-jsonschema", "pytest-cov", "pywin32"}
    for requirement in reqs:  # exactly the pins of the lock
        assert re.search(rf"^{re.escape(requirement)}(\s|;|$)", lock, re.M), requirement


def test_code_snapshot_leaves_out_secrets_and_local_state(tmp_path):
    root = tmp_path / "repo"
    for rel in ("ml_service/a.py", ".env", ".venv/lib/x.py", "local/mlflow.db", ".git/HEAD", "x/__pycache__/a.pyc"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    staged = environment.stage_code(root, tmp_path / "staged")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == ["ml_service/a.py"]
    with pytest.raises(ValueError, match="outside the repository"):
        environment.stage_code(root, root / "ml_service" / "code")


def test_command_line_keeps_placeholders_and_quotes_the_rest():
    line = builder.command_line(["python", "-m", "m", "--x", "${{inputs.x}}", "--y", "a b"])
    assert line == "python -m m --x ${{inputs.x}} --y 'a b'"


def test_registry_check_sees_new_version_or_moved_alias():
    s = registry_check.ModelState
    before = {"a": s(1, "1"), "b": s(None, None)}
    assert registry_check.registered(before, {"a": s(1, "1"), "b": s(None, None)}) == []
    assert registry_check.registered(before, {"a": s(2, "1"), "b": s(None, None)}) == ["a"]
    assert registry_check.registered(before, {"a": s(1, "1"), "b": s(1, "1")}) == ["b"]
    assert registry_check.registered(before, {"a": s(1, None), "b": s(None, None)}) == ["a"]


def test_parallel_settings_come_from_the_partitioned_use_case(cloud_project):
    single, toy = load_use_case("single", cloud_project), load_use_case("toy", cloud_project)
    assert run_pipeline.parallel_settings([single, toy]) == toy.config.parallel
    assert run_pipeline.parallel_settings([single]) == builder.ParallelSettings()


# --- the SDK's own validation ----------------------------------------------------------------------


def test_the_pipeline_of_a_fixture_use_case_passes_sdk_validation(cloud_project, env, tmp_path):
    spec, job, code = toy_job(cloud_project, env, tmp_path)
    assert builder.validation_errors(job) == {}
    assert list(job.jobs) == ["prepare", "train", "evaluate", "register"]
    for step in spec.steps:
        if step.kind == "command":
            assert job.jobs[step.name].component.command == builder.step_command(step)
    assert (
        job.jobs["prepare"].component.command
        == "python -m ml_service.pipelines.steps.prepare --use-case toy --output ${{outputs.output}}"
    )
    jobs = job._to_dict()["jobs"]
    train = jobs["train"]
    assert train["type"] == "parallel" and train["input_data"] == "${{inputs.prepared}}"
    assert train["mini_batch_size"] == "7" and train["resources"]["instance_count"] == 3
    assert train["max_concurrency_per_instance"] == 4 and train["error_threshold"] == 2
    assert train["retry_settings"] == {"max_retries": 1, "timeout": 90}
    assert train["task"]["entry_script"] == builder.PARALLEL_ENTRY_SCRIPT
    assert train["task"]["program_arguments"] == "--prepared ${{inputs.prepared}} --output ${{outputs.output}}"
    assert jobs["register"]["inputs"]["trained"]["path"] == "${{parent.jobs.train.outputs.output}}"
    assert jobs["register"]["inputs"]["decisions"]["path"] == "${{parent.jobs.evaluate.outputs.output}}"
    assert (code / "toyuc" / "model.py").is_file() and (code / "configs" / "toy.json").is_file()


def test_a_bad_value_fails_sdk_validation(cloud_project, env, tmp_path):
    _, job, _ = toy_job(cloud_project, env, tmp_path)
    job.jobs["train"].logging_level = "LOUD"
    try:
        errors = builder.validation_errors(job)
    except Exception as exc:  # noqa: BLE001 - the SDK reports some schema errors by raising
        errors = {"raised": str(exc)}
    assert "LOUD" in json.dumps(errors) or "logging_level" in json.dumps(errors)


def test_selected_steps(cloud_project, env, tmp_path):
    spec, only, _ = toy_job(cloud_project, env, tmp_path, steps=["prepare"])
    assert list(only.jobs) == ["prepare"] and builder.validation_errors(only) == {}
    with pytest.raises(ValueError, match="select it too"):
        builder.select_steps(spec, ["train"])
    with pytest.raises(ValueError, match="no step\\(s\\) fit"):
        builder.select_steps(spec, ["fit"])


# --- the command line -------------------------------------------------------------------------------


def test_missing_workspace_exits_2_with_one_line(cloud_project, capsys):
    assert run_pipeline.main(["--use-case", "toy"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in ("AZURE_SUBSCRIPTION_ID", "RESOURCE_GROUP", "WORKSPACE_NAME"))


def test_an_unknown_use_case_lists_the_declared_ones(cloud_project, tmp_path, capsys):
    assert run_pipeline.main(["--use-case", "toys", "--dry-run", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "error: unknown use case 'toys'; declared use cases: toy, single\n"


def test_dry_run_writes_yaml_that_loads_back(cloud_project, tmp_path, monkeypatch):
    out = tmp_path / "dry"
    assert run_pipeline.main(["--use-case", "toy,single", "--dry-run", "--output", str(out)]) == 0
    text = (out / "pipeline.yml").read_text()
    assert "azureml:/" not in text and str(cloud_project) not in text  # no absolute local paths left
    monkeypatch.chdir(out)  # the SDK resolves the parallel task's `code: ./code` against the current folder
    loaded = load_back(out / "pipeline.yml")
    assert builder.validation_errors(loaded) == {}
    assert "--use-case toy,single" in loaded.jobs["prepare"].component.command
    assert (out / "code" / "toyuc" / "model.py").is_file() and (out / "code" / "data" / "toy.csv").is_file()
    assert not (out / "code" / "local").exists() and not (out / "code" / ".env").exists()


def _local(line: str, values: dict[tuple[str, str], str]) -> list[str]:
    return shlex.split(PLACEHOLDER.sub(lambda m: shlex.quote(values[(m.group(1), m.group(2))]), line))


@pytest.mark.slow
def test_the_cloud_steps_run_locally_give_the_local_runners_result(
    cloud_project, env, tmp_path, monkeypatch, empty_mlflow_db
):
    import importlib

    from ml_service.pipelines.run_train_pipeline import run_pipeline as run_locally

    spec, job, _ = toy_job(cloud_project, env, tmp_path)
    local = tmp_path / "local-store"  # the local runner, in its own store
    seed_store(local, empty_mlflow_db)
    monkeypatch.setenv("LOCAL_DIR", str(local))
    reference = run_locally(spec, tmp_path / "runner", project_root=cloud_project, in_process=True)

    cloud = tmp_path / "cloud-store"  # each node's command (the parallel one through its entry script), another store
    seed_store(cloud, empty_mlflow_db)
    monkeypatch.setenv("LOCAL_DIR", str(cloud))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # mlflow.set_tracking_uri exported the first store's URI
    produced: dict[str, dict[str, Path]] = {}
    for step in spec.steps:
        forget_loaded_code()
        inputs = {k: str(produced[b.source][b.name]) for k, b in step.inputs.items() if b.source != PIPELINE_INPUT}
        outputs = {name: tmp_path / "cloud" / step.name / name for name in step.outputs}
        for folder in outputs.values():
            folder.mkdir(parents=True)
        values = {("inputs", k): v for k, v in inputs.items()} | {("outputs", k): str(v) for k, v in outputs.items()}
        if step.kind == "command":
            argv = _local(job.jobs[step.name].component.command, values)
            assert argv[:3] == ["python", "-m", step.module]
            assert importlib.import_module(argv[2]).main(argv[3:]) == 0, step.name
        else:  # Azure ML calls init() once, then run() with mini-batches of the input folder's files
            task = job._to_dict()["jobs"][step.name]["task"]
            parallel_entry.init(_local(task["program_arguments"], values))
            parallel_entry._state["root"] = cloud_project  # the code snapshot's root: the project
            files = sorted(str(p) for p in Path(inputs["prepared"]).rglob("*") if p.is_file())
            for first in range(0, len(files), 7):
                parallel_entry.run(files[first : first + 7])
        produced[step.name] = outputs

    def read(folder: Path, name: str):
        return json.loads((folder / name).read_text())

    assert read(produced["prepare"]["output"], "prepared.json") == read(reference["prepare"]["output"], "prepared.json")
    assert read(produced["evaluate"]["output"], "decisions.json") == read(
        reference["evaluate"]["output"], "decisions.json"
    )
    assert read(produced["register"]["output"], "registered.json") == read(
        reference["register"]["output"], "registered.json"
    )
    cloud_models = sorted(
        p.relative_to(produced["train"]["output"]) for p in produced["train"]["output"].rglob("*.pkl")
    )
    assert cloud_models == sorted(
        p.relative_to(reference["train"]["output"]) for p in reference["train"]["output"].rglob("*.pkl")
    )
    assert len(cloud_models) == 6
