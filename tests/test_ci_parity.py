"""Parity of the two CI systems, offline: GitHub Actions (.github/) runs what the Azure DevOps YAML (.pipelines/,
environment_setup/) runs, with the same options and timeouts, in workflows named as the pipelines.

Only a project that keeps both systems has this file (CI_FILES in bootstrap/bootstrap.py lists it under both).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO_ROOT as REPO
from tests.test_github_workflows import GITHUB_CALLS, WORKFLOWS, _load, _python_m_calls, _steps

PIPELINES = REPO / ".pipelines"
ADO_FILES = sorted(p for d in (PIPELINES, REPO / "environment_setup") for p in d.rglob("*.yml"))
ADO_CALLS = _python_m_calls(ADO_FILES)


def test_every_pipeline_has_a_workflow_of_the_same_name():
    """Each Azure DevOps pipeline of .pipelines/ (not its templates) is a GitHub workflow of the same file name,
    and the other way round, but for the reusable workflows (`_*.yml`, Azure DevOps' templates) and the IaC ones
    (Azure DevOps' are in environment_setup/)."""
    pipelines = {p.name for p in PIPELINES.glob("*.yml") if p.name != "variables-template.yml"}
    workflows = {p.name for p in WORKFLOWS if not p.name.startswith(("_", "iac-"))}
    assert pipelines, "no Azure DevOps pipeline"
    assert pipelines == workflows, {"only Azure DevOps": pipelines - workflows, "only GitHub": workflows - pipelines}


def test_smoke_test_timeouts_are_the_azure_devops_ones():
    """The default wait of the smoke test and the Web App's longer one (App Service's container start limit)."""
    template = yaml.safe_load((REPO / ".pipelines/templates/smoke-test-template.yml").read_text())
    ado_default = next(p["default"] for p in template["parameters"] if p["name"] == "timeoutSeconds")
    ado_webapp = {t for p in ADO_FILES for t in re.findall(r'timeoutSeconds: "(\d+)"', p.read_text())}
    action = _load(REPO / ".github/actions/smoke-test/action.yml")
    assert action["inputs"]["timeout-seconds"]["default"] == ado_default
    smoke = [
        s
        for s in _steps(_load(REPO / ".github/workflows/_deploy.yml"))
        if s.get("uses") == "./.github/actions/smoke-test"
    ]
    webapp = [s for s in smoke if "webapp" in s["if"]]
    assert len(webapp) == 1 and "aci" not in webapp[0]["if"]
    assert {webapp[0]["with"]["timeout-seconds"]} == ado_webapp == {"660"}
    assert all("timeout-seconds" not in s["with"] for s in smoke if s is not webapp[0])


@pytest.mark.parametrize("module", sorted(GITHUB_CALLS))
def test_each_command_is_one_azure_devops_runs_with_the_same_options(module):
    if module.split(".")[0] not in ("ml_service", "pytest"):
        assert module == "pip", f"python -m {module}: not a command of the project"
        return
    assert module in ADO_CALLS, f"python -m {module} is run by GitHub workflows but not by .pipelines/"
    ado_option_sets = {options for _, options in ADO_CALLS[module]}
    for where, options in GITHUB_CALLS[module]:
        assert options in ado_option_sets, (
            f"{where}: python -m {module} {sorted(options)}; "
            f"the Azure DevOps YAML passes {sorted(map(sorted, ado_option_sets))}"
        )


def test_each_stage_of_azure_devops_has_a_workflow():
    """The other direction: every command Azure DevOps runs, GitHub Actions runs too."""
    missing = sorted(m for m in ADO_CALLS if m.split(".")[0] == "ml_service" and m not in GITHUB_CALLS)
    assert not missing, missing
    for module in ("ml_service.pipelines.azureml.run_pipeline", "ml_service.scoring.deploy.online_endpoint"):
        github = {options for _, options in GITHUB_CALLS[module]}
        assert {options for _, options in ADO_CALLS[module]} <= github, module


def test_environments_step_reads_the_same_file_on_both_sides():
    github = (REPO / ".github/actions/azure-python/action.yml").read_text()
    azure_devops = (REPO / ".pipelines/templates/azure-python-step-template.yml").read_text()
    for text, command in ((github, "${{ inputs.command }}"), (azure_devops, "${{ parameters.command }}\n")):
        assert 'eval "$(python -m ml_service.util.environments --branch ' in text
        assert text.index("ml_service.util.environments --branch") < text.rindex(command)


def _ado_azure_ml_runs(path) -> list[tuple[str, frozenset[str], str]]:
    """(use case, run_pipeline options, --pipeline) of each use of the Azure DevOps run template in a pipeline."""
    from tests.conftest import yaml_mappings

    runs = []
    for mapping in yaml_mappings(yaml.safe_load(path.read_text(encoding="utf-8"))):
        if mapping.get("template") == "templates/azure-ml-run-template.yml":
            parameters = mapping.get("parameters") or {}
            extra = str(parameters.get("extraArguments", ""))
            runs.append((str(parameters["useCase"]), frozenset(OPTION.findall(extra)), _pipeline_of(extra)))
    return sorted(runs, key=repr)


def _github_azure_ml_runs(path) -> list[tuple[str, frozenset[str], str]]:
    """The same of each job of a workflow calling the reusable Azure ML run workflow."""
    runs = []
    for job in (_load(path).get("jobs") or {}).values():
        if job.get("uses") == "./.github/workflows/_azure-ml-run.yml":
            inputs = job.get("with") or {}
            extra = str(inputs.get("extra-arguments", ""))
            runs.append((str(inputs["use-case"]), frozenset(OPTION.findall(extra)), _pipeline_of(extra)))
    return sorted(runs, key=repr)


def _pipeline_of(extra: str) -> str:
    match = re.search(r"--pipeline\s+(\S+)", extra)
    return match.group(1) if match else "train"


OPTION = re.compile(r"(?<!\S)(--[A-Za-z][\w-]*)")


@pytest.mark.parametrize("name", sorted(p.name for p in PIPELINES.glob("*.yml") if p.name != "variables-template.yml"))
def test_each_pipeline_and_its_workflow_start_the_same_azure_ml_runs(name):
    """The Azure ML runs of a pipeline (each use of the run template: use case, options, which pipeline) are those
    of the workflow of the same name (each job calling _azure-ml-run.yml): monitoring, retraining only what it
    selected, batch scoring, training."""
    ado = _ado_azure_ml_runs(PIPELINES / name)
    github = _github_azure_ml_runs(REPO / ".github" / "workflows" / name)
    assert ado == github, {"Azure DevOps": ado, "GitHub": github}


def test_what_a_models_registered_tag_triggers_is_called_behind_registered():
    """An Azure DevOps pipeline started by another's runs tagged `models-registered` (a run that put a model in
    production) is, on GitHub, a workflow called by that other's workflow only when its run registered a model."""
    checked = 0
    for path in sorted(PIPELINES.glob("*.yml")):
        resources = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("resources") or {}
        for resource in resources.get("pipelines") or []:
            if "models-registered" not in ((resource.get("trigger") or {}).get("tags") or []):
                continue
            checked += 1
            caller = REPO / ".github" / "workflows" / f"{resource['source']}.yml"
            calls = [
                job
                for job in (_load(caller).get("jobs") or {}).values()
                if job.get("uses") == f"./.github/workflows/{path.name}"
            ]
            assert calls, f"{caller.name} does not call {path.name}, which {resource['source']}'s tag triggers"
            assert all(str(job.get("if", "")).endswith("outputs.registered == 'true'") for job in calls), caller.name
    assert checked >= 1
