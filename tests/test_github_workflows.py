"""Checks of the GitHub Actions workflows (.github/), offline, and their parity with the Azure DevOps YAML.

GitHub is not reachable from here, so these tests check what can be checked without it:
- actionlint over every workflow, check-jsonschema (GitHub's workflow and action schemas) over every file;
- every local `uses:` (composite action, reusable workflow) resolves;
- Azure is reached only by OpenID Connect: `azure/login` with client-id/tenant-id/subscription-id, the calling
  workflow grants `id-token: write`, and no client secret or credentials JSON appears anywhere;
- every job that touches Azure runs in a GitHub environment, production ones in `prod` or `infrastructure`;
- an Azure ML run is submit / wait (signed in with a credential that renews its OIDC token) / check in one job,
  whose output `registered` gates every deployment ("nothing promoted" is a success that deploys nothing);
- every `make` target is a Makefile target, and every `python -m` module answers --help with the options the
  workflows pass (with Azure DevOps kept too, test_ci_parity.py checks the workflows run the Azure DevOps YAML's
  commands with the same options, and test_pipelines_yaml.py checks those against --help).
The expected workflows are the platform's, and for the use cases derived from the declaration (pyproject.toml),
never named here: a bootstrapped project has its own.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import yaml_strings as _strings

BIN = Path(sys.executable).parent
PYTHON_M = re.compile(r"(?<![\w/.-])python(?:3(?:\.11)?)?\s+-m\s+([A-Za-z_][\w.]*)(.*)")
MAKE = re.compile(r"(?<![\w/.-])make\s+([A-Za-z][\w-]*)")
OPTION = re.compile(r"(?<!\S)(--[A-Za-z][\w-]*)")
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.yml"))
FILES = WORKFLOWS + ACTIONS
# Commands the workflows may run besides `python -m` and `make`: the infrastructure tools (the Azure DevOps
# side runs the same terraform commands, and deploys Bicep with its ARM task instead of `az deployment`) and
# shell plumbing.
OTHER_TOOLS = {"az", "terraform", "echo", "grep", "set", "eval", "exit", "KEY", "URL"}
OTHER_TOOLS |= {"if", "then", "else", "fi", "for", "do", "done"}
# actionlint (the kjanat fork) messages that are not problems of these files: a rule of the fork about a key
# GitHub's schema does not have, and azure/login, whose latest major still runs on node20.
ACTIONLINT_IGNORE = ("no explicit cache access limit", 'update the version of action "azure/login@v2"')


def _load(path: Path):
    # PyYAML reads the key `on:` as True: take the text's own key back.
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _jobs(path: Path) -> dict:
    return _load(path).get("jobs", {})


def _steps(doc) -> list[dict]:
    """Every step of a workflow's jobs or of a composite action."""
    if "runs" in doc:
        return doc["runs"].get("steps", [])
    return [s for job in doc.get("jobs", {}).values() for s in job.get("steps", [])]


def _python_m_calls(paths) -> dict[str, list[tuple[str, frozenset[str]]]]:
    calls: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for path in paths:
        for text in _strings(_load(path)):
            for line in text.replace("\\\n", " ").splitlines():
                for match in PYTHON_M.finditer(line):
                    module, rest = match.group(1), match.group(2)
                    if module.endswith("."):  # prose ("`python -m ml_service...` from the root"), not a call
                        continue
                    options = frozenset(OPTION.findall(rest.split("python -m")[0]))
                    calls.setdefault(module, []).append((_rel(path), options))
    return calls


GITHUB_CALLS = _python_m_calls(FILES)
# The parity tests (kept only where both CI systems are) carry the --help check of test_pipelines_yaml.py over.
PARITY_CHECKED = (REPO / "tests" / "test_ci_parity.py").is_file() and (
    REPO / "tests" / "test_pipelines_yaml.py"
).is_file()


def test_the_expected_workflows_exist():
    names = {p.name for p in WORKFLOWS}
    expected = {"pr.yml", "promote.yml", "iac-bicep.yml", "iac-terraform.yml", "iac-remove.yml"}
    expected |= {"_azure-ml-run.yml", "_deploy.yml", "_model-ci.yml", "_promote.yml"}  # the reusable ones
    assert expected <= names, sorted(expected - names)
    assert {p.parent.name for p in ACTIONS} >= {"setup-python", "azure-python", "resolve-environment", "smoke-test"}


def _azure_ml_runs() -> list[tuple[str, dict]]:
    """(workflow, the `with:` of the job) for every job that calls the Azure ML run workflow."""
    return [
        (_rel(path), job.get("with") or {})
        for path in WORKFLOWS
        for job in _jobs(path).values()
        if job.get("uses") == "./.github/workflows/_azure-ml-run.yml"
    ]


def test_every_declared_use_case_is_trained_by_a_workflow():
    """Each group, and each use case in no group, has a workflow whose Azure ML run trains it; every run names
    declared use cases or groups."""
    from ml_service.config import declared_groups, declared_use_cases

    groups = declared_groups(REPO)
    grouped = {member for members in groups.values() for member in members}
    known = set(groups) | set(declared_use_cases(REPO))
    trained = set()
    for where, inputs in _azure_ml_runs():
        names = str(inputs.get("use-case", "")).split(",")
        assert names != [""] and set(names) <= known, (where, names, sorted(known))
        steps = re.search(r"--steps\s+(\S+)", str(inputs.get("extra-arguments", "")))
        if steps is None or "train" in steps.group(1).split(","):
            trained |= set(names)
    expected = set(groups) | (set(declared_use_cases(REPO)) - grouped)
    assert expected <= trained, f"no workflow trains {sorted(expected - trained)}"


def test_actionlint_passes_every_workflow():
    tool = BIN / "actionlint"
    assert tool.exists(), f"{tool} not found: run `make setup`"
    ignore = [arg for message in ACTIONLINT_IGNORE for arg in ("-ignore", re.escape(message))]
    result = subprocess.run(
        [str(tool), "-no-color", *ignore, *map(str, WORKFLOWS)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("schema", "kind"), [("vendor.github-workflows", "workflows"), ("vendor.github-actions", "actions")]
)
def test_files_match_githubs_schema(schema, kind):
    files = WORKFLOWS if kind == "workflows" else ACTIONS
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_uses_resolve():
    missing = []
    for path in FILES:
        doc = _load(path)
        refs = [s.get("uses", "") for s in _steps(doc)] + [j.get("uses", "") for j in doc.get("jobs", {}).values()]
        for ref in refs:
            if ref.startswith("./"):
                target = REPO / ref
                if not (target.is_file() or (target / "action.yml").is_file()):
                    missing.append(f"{_rel(path)} -> {ref}")
    assert not missing, missing


def test_azure_sign_in_is_openid_connect_only():
    logins = 0
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        for forbidden in ("client-secret", "AZURE_CLIENT_SECRET", "ARM_CLIENT_SECRET", "creds:", "AZURE_CREDENTIALS"):
            assert forbidden not in text, f"{_rel(path)}: {forbidden}"
        for step in _steps(_load(path)):
            if str(step.get("uses", "")).startswith("azure/login@"):
                logins += 1
                assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, _rel(path)
    assert logins >= 2


def _touches_azure(job: dict) -> bool:
    uses = [str(s.get("uses", "")) for s in job.get("steps", [])]
    return any(u.startswith("azure/login@") or u == "./.github/actions/azure-python" for u in uses)


def test_azure_jobs_run_in_an_environment_and_may_request_the_oidc_token():
    checked = 0
    for path in WORKFLOWS:
        doc = _load(path)
        for name, job in doc.get("jobs", {}).items():
            if "uses" in job or not _touches_azure(job):
                continue
            checked += 1
            assert job.get("environment"), f"{_rel(path)}: job {name} touches Azure outside a GitHub environment"
            permissions = job.get("permissions") or doc.get("permissions") or {}
            assert permissions.get("id-token") == "write", f"{_rel(path)}: job {name} cannot get an OIDC token"
    assert checked >= 6


def test_callers_grant_what_their_reusable_workflows_need():
    """A called workflow cannot have more permissions than its caller: id-token and actions must be granted."""
    needs = {p.name: _load(p).get("permissions", {}) for p in WORKFLOWS if "workflow_call" in (_load(p)["on"] or {})}
    for path in WORKFLOWS:
        doc = _load(path)
        for name, job in doc.get("jobs", {}).items():
            called = str(job.get("uses", ""))
            if not called.startswith("./.github/workflows/"):
                continue
            granted = job.get("permissions") or doc.get("permissions") or {}
            for scope, level in needs[Path(called).name].items():
                assert granted.get(scope) in (level, "write"), f"{_rel(path)}: job {name} lacks {scope}: {level}"
            if needs[Path(called).name].get("id-token"):
                assert job.get("secrets") == "inherit", f"{_rel(path)}: job {name} must pass secrets: inherit"


def test_production_is_behind_a_protected_environment():
    """Production deployments run in `prod` (required reviewers, docs/getting_started_github.md)."""
    promote = _jobs(REPO / ".github/workflows/_promote.yml")
    assert promote["deploy-prod"]["with"]["environment"] == "prod"
    assert promote["deploy-prod"]["needs"] == "deploy-test"
    assert promote["deploy-test"]["with"]["environment"] == "test"
    # The Web App is production: every job deploying it does so in `prod`.
    webapps = [
        (_rel(path), name, job)
        for path in WORKFLOWS
        for name, job in _jobs(path).items()
        if job.get("uses") == "./.github/workflows/_deploy.yml" and (job.get("with") or {}).get("target") == "webapp"
    ]
    assert webapps, "no workflow deploys the Web App"
    assert all(job["with"].get("environment") == "prod" for _, _, job in webapps), webapps
    for name in ("iac-bicep.yml", "iac-terraform.yml", "iac-remove.yml"):
        jobs = _jobs(REPO / ".github/workflows" / name)
        assert all(job.get("environment") == "infrastructure" for job in jobs.values()), name
    environments = yaml.safe_load((REPO / "environment_setup" / "environments.yml").read_text())
    assert environments["promotion"][-1] == "prod"


def test_plan_before_apply():
    bicep = _jobs(REPO / ".github/workflows/iac-bicep.yml")
    assert bicep["deploy"]["needs"] == "what-if"
    assert "az deployment group what-if" in " ".join(str(s.get("run", "")) for s in bicep["what-if"]["steps"])
    terraform = _jobs(REPO / ".github/workflows/iac-terraform.yml")
    assert terraform["apply"]["needs"] == "plan"
    assert "terraform apply -input=false tfplan" in " ".join(str(s.get("run", "")) for s in terraform["apply"]["steps"])


# --- an Azure ML run: submit, wait, check; "nothing promoted" skips the deployments ----------------------


def _run_steps(job: dict) -> list[tuple[dict, str]]:
    """(step, its run_pipeline phase option) for the steps of a job that run run_pipeline."""
    found = []
    for step in job["steps"]:
        text = " ".join(_strings(step))
        match = re.search(r"ml_service\.pipelines\.azureml\.run_pipeline .*?(--submit-to|--wait-for|--check)\b", text)
        if match:
            found.append((step, match.group(1)))
    return found


def test_an_azure_ml_run_is_submit_wait_check_in_one_job_publishing_registered():
    path = REPO / ".github/workflows/_azure-ml-run.yml"
    doc = _load(path)
    job = doc["jobs"]["run"]
    phases = _run_steps(job)
    assert [phase for _, phase in phases] == ["--submit-to", "--wait-for", "--check"]
    (submit, _), (wait, _), (check, _) = phases
    # The three share one state file in the job's temp folder.
    state_files = {
        re.search(r'(--submit-to|--wait-for|--check) "([^"]+)"', " ".join(_strings(s))).group(2) for s, _ in phases
    }
    assert state_files == {"${RUNNER_TEMP}/azureml-run.json"}
    # The wait renews its sign-in: azure_credential() needs these beside the runner's OIDC request variables.
    assert {"AZURE_CLIENT_ID", "AZURE_TENANT_ID"} <= set(wait.get("env", {}))
    assert (job.get("permissions") or doc["permissions"]).get("id-token") == "write"
    # The check signs in afresh (the wait may outlive azure/login's session), and its output is the workflow's.
    steps = job["steps"]
    assert str(steps[steps.index(check) - 1].get("uses", "")).startswith("azure/login@")
    assert job["outputs"]["registered"] == f"${{{{ steps.{check['id']}.outputs.registered }}}}"
    assert doc["on"]["workflow_call"]["outputs"]["registered"]["value"] == "${{ jobs.run.outputs.registered }}"
    # Extra options pass through, as the Azure DevOps template's extraArguments.
    assert "${{ inputs.extra-arguments }}" in " ".join(_strings(submit))


def _needs(job: dict) -> list[str]:
    return [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])


def _is_monitor_run(job: dict) -> bool:
    return "--pipeline monitor" in str((job.get("with") or {}).get("extra-arguments", ""))


def test_deployments_run_only_when_the_run_registered_a_model():
    """A job after an Azure ML run runs only when that run registered a model; after a monitor run (which
    registers nothing), only when the monitor selected models to retrain."""
    gated = 0
    for path in WORKFLOWS:
        jobs = _jobs(path)
        for train in [n for n, job in jobs.items() if job.get("uses") == "./.github/workflows/_azure-ml-run.yml"]:
            output = "retrain" if _is_monitor_run(jobs[train]) else "registered"
            for name, job in jobs.items():
                if train in _needs(job):
                    gated += 1
                    assert job.get("if") == f"needs.{train}.outputs.{output} == 'true'", f"{_rel(path)}: {name}"
    assert gated >= 1  # the CI workflow of each use case deploys after training


def test_what_runs_behind_the_registered_gate_is_only_called():
    """A workflow reached from a deployment job behind `registered == 'true'` (directly or through the workflows
    it calls) is started only by being called: GitHub's workflow_run cannot filter on what a run registered
    (Azure DevOps' tag trigger can), so a trigger of its own would deploy when nothing was promoted."""
    by_name = {f"./.github/workflows/{p.name}": p for p in WORKFLOWS}
    behind = []
    for path in WORKFLOWS:
        jobs = _jobs(path)
        trains = {n for n, job in jobs.items() if job.get("uses") == "./.github/workflows/_azure-ml-run.yml"}
        behind += [job["uses"] for job in jobs.values() if set(_needs(job)) & trains and job.get("uses") in by_name]
    assert behind, "no workflow is called behind an Azure ML run"
    seen: set[str] = set()
    while behind:
        called = behind.pop()
        if called in seen:
            continue
        seen.add(called)
        on = _load(by_name[called])["on"]
        assert "workflow_call" in on and "workflow_run" not in on, called
        behind += [j["uses"] for j in _jobs(by_name[called]).values() if j.get("uses") in by_name]


# --- the commands -------------------------------------------------------------------------------------


def test_workflows_run_ml_service_commands():
    for module in (
        "ml_service.pipelines.azureml.run_pipeline",
        "ml_service.scoring.package",
        "ml_service.scoring.deploy.aci",
        "ml_service.scoring.deploy.online_endpoint",
        "ml_service.scoring.deploy.webapp",
        "ml_service.util.smoke_test_scoring_service",
        "ml_service.util.environments",
        "ml_service.registry.azureml_promote",
    ):
        assert module in GITHUB_CALLS, module


def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:", makefile, flags=re.MULTILINE))
    used = {(_rel(p), t) for p in FILES for text in _strings(_load(p)) for t in MAKE.findall(text)}
    assert {t for _, t in used} >= {"setup", "lint"}
    assert not [u for u in used if u[1] not in targets], used


def test_run_steps_call_only_known_tools():
    unknown = set()
    for path in FILES:
        for step in _steps(_load(path)):
            for line in str(step.get("run", "")).splitlines():
                word = line.strip().split(" ", 1)[0].split("=", 1)[0]
                if word and not word.startswith(("#", "-", '"', "$", "[")) and word not in {"python", "make"}:
                    if word not in OTHER_TOOLS:
                        unknown.add(f"{_rel(path)}: {word}")
    assert not unknown, sorted(unknown)


@pytest.mark.slow
@pytest.mark.skipif(PARITY_CHECKED, reason="the same calls as Azure DevOps (test_ci_parity.py), checked there")
@pytest.mark.parametrize("module", sorted(m for m in GITHUB_CALLS if m.startswith("ml_service.")))
def test_ml_service_command_answers_help_with_the_options_used(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    used = set().union(*(options for _, options in GITHUB_CALLS[module]))
    assert not sorted(o for o in used if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", result.stdout))


DEPLOYERS = ("aci", "online_endpoint", "webapp")


def _command_option(command: str, name: str) -> str | None:
    words = shlex.split(command)
    return words[words.index(name) + 1] if name in words else None


def test_github_deployments_deploy_the_image_built_once():
    """_deploy.yml builds the image only for a package made in the job, before publishing the package (so the
    artifact carries image.json), and every deployment deploys that recorded image."""
    doc = _load(REPO / ".github/workflows/_deploy.yml")
    steps = doc["jobs"]["deploy"]["steps"]
    names = [s.get("name") for s in steps]
    build = steps[names.index("Build the scoring image once (recorded by digest)")]
    assert build["if"] == "inputs.package-from != 'artifact'"
    publish = names.index("Publish the scoring package")
    assert names.index(build["name"]) < publish and steps[publish]["with"]["path"] == "${{ runner.temp }}/package/"
    assert _command_option(build["with"]["command"], "--image-file") == "${RUNNER_TEMP}/package/image.json"
    deploys = [s for s in steps if any(f"ml_service.scoring.deploy.{d}" in str(s.get("with", {})) for d in DEPLOYERS)]
    assert len(deploys) == 4
    for step in deploys:
        command = step["with"]["command"]
        assert _command_option(command, "--image-file") == "${RUNNER_TEMP}/package/image.json", step["name"]
        assert names.index(step["name"]) > publish
