"""The Azure DevOps side of the infrastructure, offline: checkov over every Azure DevOps pipeline, and the IaC
pipelines of environment_setup/ (the cluster name they pass, Key Vault recovery, approvals, a pinned Terraform).

A project that keeps only GitHub Actions has none of these files, and bootstrap removes this test file with them
(CI_FILES in bootstrap/bootstrap.py). checkov's Azure Pipelines checks only look at files named
`*azure-pipelines.yml`, so the pipelines are scanned from copies named that way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import yaml_mappings as _mappings
from tests.test_iac import _terraform, checkov, checkov_failures, compute_cluster_default, vague_skips

PIPELINE_DIRS = (REPO / ".pipelines", REPO / "environment_setup")
BICEP_PIPELINE = REPO / "environment_setup/iac-create-environment-pipeline-bicep.yml"
TERRAFORM_PIPELINE = REPO / "environment_setup/iac-create-environment-pipeline-tf.yml"


@pytest.fixture(scope="module")
def pipelines_scan(tmp_path_factory) -> list[dict]:
    copies = tmp_path_factory.mktemp("pipelines")
    for folder in PIPELINE_DIRS:
        for path in folder.rglob("*.yml"):
            flat = path.relative_to(REPO).as_posix().replace("/", "__").removesuffix(".yml")
            shutil.copy(path, copies / f"{flat}-azure-pipelines.yml")
    return checkov("-d", str(copies), "--framework", "azure_pipelines", "secrets")


@pytest.mark.slow
def test_pipelines_have_no_failed_checks(pipelines_scan):
    reports = pipelines_scan
    assert not checkov_failures(reports), "\n".join(checkov_failures(reports))
    passed = sum(r["summary"]["passed"] for r in reports if r["check_type"] == "azure_pipelines")
    assert passed > 0, "checkov ran no Azure Pipelines check"
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    assert not vague_skips(reports), vague_skips(reports)


def yaml_variables() -> dict[str, str]:
    doc = yaml.safe_load((REPO / ".pipelines/variables-template.yml").read_text(encoding="utf-8"))
    return {v["name"]: v["value"] for v in doc["variables"]}


def test_the_iac_pipelines_create_the_compute_cluster_the_jobs_name():
    """The pipelines' AML_COMPUTE_CLUSTER_NAME is the jobs' default, and both IaC pipelines pass it on."""
    assert yaml_variables()["AML_COMPUTE_CLUSTER_NAME"] == compute_cluster_default()
    assert BICEP_PIPELINE.read_text().count("-computeClusterName $(AML_COMPUTE_CLUSTER_NAME)") == 2  # validate, deploy
    assert '-var "compute_cluster_name=${AML_COMPUTE_CLUSTER_NAME}"' in TERRAFORM_PIPELINE.read_text()


def _fake_az(folder: Path, deleted: list[dict]) -> dict[str, str]:
    """An `az` that answers `az keyvault list-deleted` with `deleted` (Azure's edge, replaced; says so)."""
    script = folder / "az"
    script.write_text(f"#!/bin/sh\ncat <<'JSON'\n{json.dumps(deleted)}\nJSON\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}", "TF_BUILD": "True"}


@pytest.mark.parametrize(
    ("vault_id", "name", "mode"),
    [
        (
            "/subscriptions/s/resourceGroups/mlopsdia-rg/providers/Microsoft.KeyVault/vaults/x",
            "mlopsdiakvab12cd",
            "recover",
        ),
        (
            "/subscriptions/s/resourceGroups/other-rg/providers/Microsoft.KeyVault/vaults/x",
            "mlopsdiakvab12cd",
            "default",
        ),
        (
            "/subscriptions/s/resourceGroups/mlopsdia-rg/providers/Microsoft.KeyVault/vaults/x",
            "otherkvab12cd",
            "default",
        ),
    ],
)
def test_bicep_recovers_a_soft_deleted_key_vault(tmp_path, vault_id, name, mode):
    """After a teardown, main.bicep is deployed with createMode 'recover' when the pipeline finds that vault
    (network edge replaced: a fake `az`)."""
    deleted = [{"name": name, "properties": {"vaultId": vault_id, "location": "westeurope"}}]
    result = subprocess.run(
        ["bash", str(REPO / "environment_setup/keyvault_create_mode.sh"), "mlopsdia-rg", "mlopsdia"],
        env=_fake_az(tmp_path, deleted),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert f"##vso[task.setvariable variable=KEY_VAULT_CREATE_MODE]{mode}" in result.stdout
    pipeline = yaml.safe_load(BICEP_PIPELINE.read_text())
    (deploy,) = [s for s in pipeline["stages"] if s["stage"] == "Deploy"]
    steps = deploy["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
    finder = next(i for i, s in enumerate(steps) if s.get("inputs", {}).get("scriptPath", "").endswith("mode.sh"))
    arm = next(i for i, s in enumerate(steps) if s.get("task", "").startswith("AzureResourceManagerTemplate"))
    assert finder < arm and "-keyVaultCreateMode $(KEY_VAULT_CREATE_MODE)" in steps[arm]["inputs"]["overrideParameters"]


def test_bicep_deploys_only_after_the_approval_terraform_has():
    for path in (BICEP_PIPELINE, TERRAFORM_PIPELINE):
        pipeline = yaml.safe_load(path.read_text())
        applying = [s for s in pipeline["stages"] if s["stage"] in ("Deploy", "Apply")]
        assert applying, path.name
        for stage in applying:
            (job,) = stage["jobs"]
            assert "deployment" in job and job["environment"] == "${{ parameters.infrastructureEnvironment }}"
        (parameter,) = [p for p in pipeline["parameters"] if p["name"] == "infrastructureEnvironment"]
        assert parameter["default"] == "infrastructure"


def test_terraform_is_installed_at_a_pinned_version_before_each_use():
    pipeline = yaml.safe_load(TERRAFORM_PIPELINE.read_text())
    version = next(
        v["value"] for v in pipeline["variables"] if isinstance(v, dict) and v.get("name") == "TERRAFORM_VERSION"
    )
    major, minor, _ = (int(x) for x in version.split("."))
    required = re.search(r'required_version = ">= (\d+)\.(\d+)"', _terraform())
    assert (major, minor) >= (int(required.group(1)), int(required.group(2)))
    install = (REPO / "environment_setup/terraform-install-steps.yml").read_text()
    assert "SHA256SUMS" in install and "sha256sum --check" in install and "task.prependpath" in install
    checked = 0
    for mapping in _mappings(pipeline):
        steps = mapping.get("steps")
        if isinstance(steps, list) and any(
            "terraform" in str(s.get("inputs", {}).get("inlineScript", "")) for s in steps
        ):
            templates = [i for i, s in enumerate(steps) if s.get("template") == "terraform-install-steps.yml"]
            uses = [
                i for i, s in enumerate(steps) if "terraform init" in str(s.get("inputs", {}).get("inlineScript", ""))
            ]
            assert templates and uses and templates[0] < uses[0]
            checked += 1
    assert checked >= 2  # plan and apply
