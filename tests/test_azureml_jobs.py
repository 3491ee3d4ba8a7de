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
    (root / "environment_setup").mkdir(exist_ok=True)
    for name in ("parallel-requirements.lock", "parallel-driver.in"):
        shutil.copy(REPO_ROOT / "environment_setup" / name, root / "environment_setup" / name)
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
    # the output option is renamed: the parallel driver parses its own --output from the same command line
    assert train["task"]["program_arguments"] == "--prepared ${{inputs.prepared}} --mlops-output ${{outputs.output}}"
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


# --- what a fresh subscription needs of the built job ------------------------------------------------


def test_no_step_is_reused_from_an_earlier_run_unless_named_cacheable(cloud_project, env, tmp_path):
    """Azure ML reuses a deterministic step whose code and inputs are unchanged: a rerun of the same commit would
    then reuse evaluate's old decision and register's old answer, and register nothing."""
    spec, job, _ = toy_job(cloud_project, env, tmp_path)
    assert {n: node.component.is_deterministic for n, node in job.jobs.items()} == {s.name: False for s in spec.steps}
    _, job, _ = toy_job(cloud_project, env, tmp_path / "again", cacheable=["prepare"])
    assert [n for n, node in job.jobs.items() if node.component.is_deterministic] == ["prepare"]


def test_the_built_job_carries_the_build_lineage_to_every_step(cloud_project, env, tmp_path):
    lineage = {"BUILD_ID": "417", "BUILD_URI": "https://dev.azure.com/o/p/_build/results?buildId=417"}
    _, job, _ = toy_job(cloud_project, env, tmp_path, environment_variables={**lineage, "GIT_COMMIT": "abc123"})
    assert builder.validation_errors(job) == {}
    for name, node in job._to_dict()["jobs"].items():
        assert lineage.items() <= node["environment_variables"].items(), name
        assert node["environment_variables"]["GIT_COMMIT"] == "abc123", name


def test_run_pipeline_passes_ci_lineage_and_the_parallel_environment(cloud_project, tmp_path, monkeypatch):
    """What `run_pipeline` builds from the CI's variables: BUILD_ID, BUILD_URI and the commit on every step (the
    code snapshot has no .git), and the parallel step in its own environment with the driver's packages."""
    monkeypatch.setenv("BUILD_ID", "417")
    monkeypatch.setenv("BUILD_URI", "https://ci.example/417")
    monkeypatch.setenv("BUILD_SOURCEVERSION", "0123abcd")
    out = tmp_path / "dry"
    assert run_pipeline.main(["--use-case", "toy", "--dry-run", "--output", str(out)]) == 0
    monkeypatch.chdir(out)  # the SDK resolves the parallel task's `code: ./code` against the current folder
    loaded = load_back(out / "pipeline.yml")
    for name, node in loaded.jobs.items():
        variables = node.environment_variables
        assert variables["BUILD_ID"] == "417" and variables["BUILD_URI"] == "https://ci.example/417", name
        assert variables["GIT_COMMIT"] == "0123abcd", name
    assert not (out / "code" / ".git").exists()
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
    import subprocess
    import sys

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
    out = tmp_path / "github_output"
    monkeypatch.setenv("TF_BUILD", "True")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    before = {"m": [3, "3"]}
    assert run_pipeline.outcome(["m"], before, {"m": [3, "3"]}) == 0
    printed = capsys.readouterr().out
    assert "nothing promoted" in printed
    assert "##vso[task.setvariable variable=registered;isOutput=true]false" in printed
    assert run_pipeline.outcome(["m"], before, {"m": [4, "4"]}) == 0
    assert "##vso[task.setvariable variable=registered;isOutput=true]true" in capsys.readouterr().out
    assert out.read_text() == "registered=false\nregistered=true\n"


def test_wait_and_check_read_a_state_file_or_exit_2(cloud_project, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("RESOURCE_GROUP", "rg")
    monkeypatch.setenv("WORKSPACE_NAME", "ws")
    bad = tmp_path / "state.json"
    bad.write_text("{}")
    assert run_pipeline.main(["--use-case", "toy", "--check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--submit-to" in err and len(err.strip().splitlines()) == 1
    assert run_pipeline.main(["--use-case", "toy", "--wait-for", str(tmp_path / "missing.json")]) == 2


def test_a_long_wait_in_azure_devops_signs_in_with_a_renewing_credential(monkeypatch):
    from azure.identity import AzurePipelinesCredential, DefaultAzureCredential

    for suffix in ("TENANT_ID", "CLIENT_ID", "SERVICE_CONNECTION_ID"):
        monkeypatch.setenv(f"AZURESUBSCRIPTION_{suffix}", "00000000-0000-0000-0000-000000000001")
    monkeypatch.delenv("SYSTEM_ACCESSTOKEN", raising=False)
    assert isinstance(run_pipeline.azure_credential(), DefaultAzureCredential)  # no System.AccessToken: the CLI login
    monkeypatch.setenv("SYSTEM_ACCESSTOKEN", "token")
    monkeypatch.setenv("SYSTEM_OIDCREQUESTURI", "https://dev.azure.com/o/p/_apis/distributedtask/hubs/build/plans/x")
    assert isinstance(run_pipeline.azure_credential(), AzurePipelinesCredential)


def test_a_long_wait_in_github_actions_renews_its_oidc_assertion(monkeypatch):
    """In GitHub Actions the wait signs in with a ClientAssertionCredential whose assertion callback asks the
    runner for a new OIDC token on every call. Only the network edge is replaced: a real HTTP server on
    127.0.0.1 stands in for GitHub's token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from azure.identity import ClientAssertionCredential, DefaultAzureCredential

    seen: list[tuple[str, dict, str]] = []

    class TokenEndpoint(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            seen.append((parts.path, parse_qs(parts.query), self.headers.get("Authorization", "")))
            body = json.dumps({"value": f"assertion-{len(seen)}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    for name in ("AZURESUBSCRIPTION_TENANT_ID", "SYSTEM_ACCESSTOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runtime-token")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000002")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000003")
    # Without id-token: write GitHub sets no request URL: the Azure CLI login then, as before.
    assert isinstance(run_pipeline.azure_credential(), DefaultAzureCredential)

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/_apis/idtoken?api-version=2.0"
        monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", url)
        credential = run_pipeline.azure_credential()
        assert isinstance(credential, ClientAssertionCredential)
        # The callback azure-identity calls whenever it needs a new Entra token (its only handle on it).
        assertion = credential._func
        assert [assertion(), assertion()] == ["assertion-1", "assertion-2"]  # asked afresh each time
        for path, query, authorization in seen:
            assert path == "/_apis/idtoken"
            assert query == {"api-version": ["2.0"], "audience": ["api://AzureADTokenExchange"]}
            assert authorization == "bearer runtime-token"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    # The endpoint gone: one clear error naming the likely fix, not a token-less sign-in.
    with pytest.raises(RuntimeError, match="id-token: write"):
        assertion()
