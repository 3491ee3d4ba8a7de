"""checkov over the IaC (Bicep, Terraform, Dockerfile), offline, and what both flavours of the IaC create.

Every finding must be fixed or skipped in the file with a reason (`#checkov:skip=CKV_...: reason`).
The Azure DevOps pipelines of the IaC (and checkov over every Azure DevOps pipeline) are checked in
test_iac_azure_devops.py, which goes with them when a project keeps only GitHub Actions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as REPO

CHECKOV = Path(sys.executable).parent / "checkov"


def checkov_reports(stdout: str) -> list[dict]:
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


def checkov(*args: str) -> list[dict]:
    """checkov's reports for `args` (run from the project root, offline)."""
    assert CHECKOV.exists(), f"{CHECKOV} not found: run `make setup`"
    result = subprocess.run(
        [str(CHECKOV), "--skip-download", "-o", "json", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    # checkov exits 1 when a check fails: the tests say which.
    assert result.returncode in (0, 1), result.stderr
    return checkov_reports(result.stdout)


def checkov_failures(reports: list[dict]) -> list[str]:
    return [
        f"{r['check_type']}: {c['check_id']} {c['check_name']} at {c['file_path']}:{c['file_line_range']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]


def vague_skips(reports: list[dict]) -> list[str]:
    """Skipped checks whose `#checkov:skip=` comment gives no real reason."""
    return [
        f"{c['check_id']} at {c['file_path']}"
        for r in reports
        for c in r["results"]["skipped_checks"]
        if len((c["check_result"].get("suppress_comment") or "").strip()) < 20
    ]


@pytest.fixture(scope="module")
def environment_setup_scan() -> list[dict]:
    return checkov("-d", "environment_setup")


@pytest.mark.slow
def test_environment_setup_has_no_failed_checks(environment_setup_scan):
    reports = environment_setup_scan
    assert not checkov_failures(reports), "\n".join(checkov_failures(reports))
    scanned = {r["check_type"] for r in reports if r["summary"]["resource_count"]}
    assert {"terraform", "bicep", "dockerfile"} <= scanned, scanned
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)


@pytest.mark.slow
def test_every_skipped_check_says_why(environment_setup_scan):
    assert not vague_skips(environment_setup_scan), vague_skips(environment_setup_scan)


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


def _bicep() -> str:
    return (REPO / "environment_setup/iac/bicep/main.bicep").read_text(encoding="utf-8")


def _terraform() -> str:
    return "".join(
        p.read_text(encoding="utf-8") for p in sorted((REPO / "environment_setup/iac/terraform").glob("*.tf"))
    )


def _block(text: str, header: str) -> str:
    """The `{...}` body after `header`, braces balanced."""
    start = text.index("{", text.index(header))
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    raise AssertionError(f"unbalanced block after {header}")


def compute_cluster_default() -> str:
    """The compute cluster every training job is submitted to unless AML_COMPUTE_CLUSTER_NAME says otherwise."""
    import dataclasses

    from ml_service.util.env_variables import Settings

    field = next(f for f in dataclasses.fields(Settings) if f.name == "aml_compute_cluster_name")
    return getattr(field.default, "default", field.default)  # a pydantic Field's default, or a plain one


def test_both_flavours_create_the_compute_cluster_the_jobs_name():
    """Every training job is submitted to AML_COMPUTE_CLUSTER_NAME: the IaC creates it under that name, scaling
    from 0 nodes (no cost idle) to at least the parallel step's instance_count, with a low-priority option."""
    import re

    from ml_service.config import declared_use_cases, load_config

    default = compute_cluster_default()
    instances = max(load_config(name, REPO).parallel.instance_count for name in declared_use_cases(REPO))

    bicep = _bicep()
    cluster = _block(bicep, "resource computeCluster 'Microsoft.MachineLearningServices/workspaces/computes@")
    assert f"param computeClusterName string = '{default}'" in bicep and "name: computeClusterName" in cluster
    assert "computeType: 'AmlCompute'" in cluster and "minNodeCount: 0" in cluster
    assert "maxNodeCount: computeMaxNodes" in cluster and "nodeIdleTimeBeforeScaleDown: 'PT120S'" in cluster
    assert "computeLowPriority ? 'LowPriority' : 'Dedicated'" in cluster
    assert int(re.search(r"param computeMaxNodes int = (\d+)", bicep).group(1)) >= instances

    terraform = _terraform()
    tf_cluster = _block(terraform, 'resource "azurerm_machine_learning_compute_cluster" "main"')
    assert "name                          = var.compute_cluster_name" in tf_cluster
    assert "min_node_count                       = 0" in tf_cluster
    assert "max_node_count                       = var.compute_max_nodes" in tf_cluster
    assert 'scale_down_nodes_after_idle_duration = "PT120S"' in tf_cluster
    assert 'var.compute_low_priority ? "LowPriority" : "Dedicated"' in tf_cluster
    tf_name = _block(terraform, 'variable "compute_cluster_name"')
    assert f'default     = "{default}"' in tf_name
    tf_max = _block(terraform, 'variable "compute_max_nodes"')
    assert int(re.search(r"default\s+=\s+(\d+)", tf_max).group(1)) >= instances


def test_both_flavours_can_recover_a_soft_deleted_key_vault():
    """Purge protection keeps a deleted vault's name for 90 days: Bicep takes the vault's create mode as a
    parameter (the Azure DevOps pipeline finds it, test_iac_azure_devops.py), Terraform recovers by itself."""
    assert "param keyVaultCreateMode string = 'default'" in _bicep()
    assert "createMode: keyVaultCreateMode" in _block(_bicep(), "resource keyVault 'Microsoft.KeyVault/vaults@")
    assert "recover_soft_deleted_key_vaults = true" in _terraform()
