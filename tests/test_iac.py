"""checkov over the IaC (Bicep, Terraform, Dockerfile) and the Azure DevOps pipelines, offline.

Every finding must be fixed or skipped in the file with a reason (`#checkov:skip=CKV_...: reason`).
checkov's Azure Pipelines checks only look at files named `*azure-pipelines.yml`, so the pipelines are scanned
from copies named that way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as REPO

CHECKOV = Path(sys.executable).parent / "checkov"
PIPELINE_DIRS = (REPO / ".pipelines", REPO / "environment_setup")


def _reports(stdout: str) -> list[dict]:
    """checkov -o json prints one JSON document per directory, each a report or a list of reports."""
    decoder = json.JSONDecoder()
    reports: list[dict] = []
    i = 0
    while True:
        while i < len(stdout) and stdout[i].isspace():
            i += 1
        if i >= len(stdout):
            return reports
        doc, i = decoder.raw_decode(stdout, i)
        reports.extend(doc if isinstance(doc, list) else [doc])


def _checkov(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CHECKOV), "--skip-download", "-o", "json", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, list[dict]]:
    """Both scans run at once (two processes): environment_setup/ and copies of every pipeline file."""
    assert CHECKOV.exists(), f"{CHECKOV} not found: run `make setup`"
    copies = tmp_path_factory.mktemp("pipelines")
    for folder in PIPELINE_DIRS:
        for path in folder.rglob("*.yml"):
            flat = path.relative_to(REPO).as_posix().replace("/", "__").removesuffix(".yml")
            shutil.copy(path, copies / f"{flat}-azure-pipelines.yml")
    processes = {
        "environment_setup": _checkov("-d", "environment_setup"),
        "pipelines": _checkov("-d", str(copies), "--framework", "azure_pipelines", "secrets"),
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        # checkov exits 1 when a check fails: the tests below say which.
        assert process.returncode in (0, 1), stderr
        results[name] = _reports(stdout)
    return results


def _failures(reports: list[dict]) -> list[str]:
    return [
        f"{r['check_type']}: {c['check_id']} {c['check_name']} at {c['file_path']}:{c['file_line_range']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]


@pytest.mark.slow
def test_environment_setup_has_no_failed_checks(scans):
    reports = scans["environment_setup"]
    assert not _failures(reports), "\n".join(_failures(reports))
    scanned = {r["check_type"] for r in reports if r["summary"]["resource_count"]}
    assert {"terraform", "bicep", "dockerfile"} <= scanned, scanned
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)


@pytest.mark.slow
def test_pipelines_have_no_failed_checks(scans):
    reports = scans["pipelines"]
    assert not _failures(reports), "\n".join(_failures(reports))
    passed = sum(r["summary"]["passed"] for r in reports if r["check_type"] == "azure_pipelines")
    assert passed > 0, "checkov ran no Azure Pipelines check"
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)


@pytest.mark.slow
def test_every_skipped_check_says_why(scans):
    vague = [
        f"{c['check_id']} at {c['file_path']}"
        for reports in scans.values()
        for r in reports
        for c in r["results"]["skipped_checks"]
        if len((c["check_result"].get("suppress_comment") or "").strip()) < 20
    ]
    assert not vague, vague


def test_bicep_and_terraform_create_the_same_resources():
    bicep = (REPO / "environment_setup/iac/bicep/main.bicep").read_text(encoding="utf-8")
    terraform = "".join(p.read_text(encoding="utf-8") for p in (REPO / "environment_setup/iac/terraform").glob("*.tf"))
    pairs = {
        "Microsoft.MachineLearningServices/workspaces": "azurerm_machine_learning_workspace",
        "Microsoft.Storage/storageAccounts": "azurerm_storage_account",
        "Microsoft.KeyVault/vaults": "azurerm_key_vault",
        "Microsoft.Insights/components": "azurerm_application_insights",
        "Microsoft.OperationalInsights/workspaces": "azurerm_log_analytics_workspace",
        "Microsoft.ContainerRegistry/registries": "azurerm_container_registry",
        "Microsoft.ManagedIdentity/userAssignedIdentities": "azurerm_user_assigned_identity",
        "Microsoft.Authorization/roleAssignments": "azurerm_role_assignment",
    }
    for arm_type, tf_type in pairs.items():
        assert f"'{arm_type}@" in bicep, arm_type
        assert f'resource "{tf_type}"' in terraform, tf_type
    assert (REPO / "environment_setup/iac/bicep/main.parameters.json").is_file()


def test_both_flavours_give_aci_a_pull_identity_with_acr_pull():
    """The registry's admin user is off: ACI pulls with a user-assigned identity that has AcrPull on it."""
    bicep = (REPO / "environment_setup/iac/bicep/main.bicep").read_text(encoding="utf-8")
    main_tf = (REPO / "environment_setup/iac/terraform/main.tf").read_text(encoding="utf-8")
    outputs_tf = (REPO / "environment_setup/iac/terraform/outputs.tf").read_text(encoding="utf-8")
    assert "adminUserEnabled: false" in bicep and "admin_enabled       = false" in main_tf
    assert "name: 'id-${baseName}-aci-pull'" in bicep
    assert "acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'" in bicep  # built-in AcrPull
    assert "scope: registry" in bicep and "principalId: aciPullIdentity.properties.principalId" in bicep
    assert "output aciPullIdentityId string = aciPullIdentity.id" in bicep
    assert 'name                = "id-${var.base_name}-aci-pull"' in main_tf
    role = main_tf.split('resource "azurerm_role_assignment" "aci_pull"', 1)[1].split("}", 1)[0]
    assert "scope                = azurerm_container_registry.main.id" in role
    assert 'role_definition_name = "AcrPull"' in role
    assert "principal_id         = azurerm_user_assigned_identity.aci_pull.principal_id" in role
    assert 'output "aci_pull_identity_id"' in outputs_tf and "azurerm_user_assigned_identity.aci_pull.id" in outputs_tf


def test_install_requirements_matches_the_makefile():
    script = (REPO / "environment_setup/install_requirements.sh").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    uv_pin = next(part for part in makefile.split('"') if part.startswith("uv=="))
    assert uv_pin in script
    assert "uv pip sync" in script and "requirements.lock" in script
    assert "-m venv .venv" in script
