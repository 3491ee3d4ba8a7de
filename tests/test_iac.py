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
import yaml

from tests.conftest import REPO_ROOT as REPO
from tests.conftest import yaml_mappings as _mappings

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


def test_both_flavours_create_the_compute_cluster_the_jobs_name():
    """Every training job is submitted to AML_COMPUTE_CLUSTER_NAME: the IaC creates it under that name, scaling
    from 0 nodes (no cost idle) to at least the parallel step's instance_count, with a low-priority option."""
    import dataclasses
    import re

    from ml_service.config import declared_use_cases, load_config
    from ml_service.util.env_variables import Settings

    field = next(f for f in dataclasses.fields(Settings) if f.name == "aml_compute_cluster_name")
    default = getattr(field.default, "default", field.default)  # a pydantic Field's default, or a plain one
    variables = yaml_variables()
    assert variables["AML_COMPUTE_CLUSTER_NAME"] == default
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

    bicep_pipeline = (REPO / "environment_setup/iac-create-environment-pipeline-bicep.yml").read_text()
    tf_pipeline = (REPO / "environment_setup/iac-create-environment-pipeline-tf.yml").read_text()
    assert bicep_pipeline.count("-computeClusterName $(AML_COMPUTE_CLUSTER_NAME)") == 2  # validate and deploy
    assert '-var "compute_cluster_name=${AML_COMPUTE_CLUSTER_NAME}"' in tf_pipeline


def yaml_variables() -> dict[str, str]:
    import yaml

    doc = yaml.safe_load((REPO / ".pipelines/variables-template.yml").read_text(encoding="utf-8"))
    return {v["name"]: v["value"] for v in doc["variables"]}


def _fake_az(folder: Path, deleted: list[dict]) -> dict[str, str]:
    """An `az` that answers `az keyvault list-deleted` with `deleted` (Azure's edge, replaced; says so)."""
    import os

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
    """Purge protection keeps a deleted vault's name for 90 days: after a teardown, main.bicep is deployed with
    createMode 'recover' when the pipeline finds that vault (network edge replaced: a fake `az`)."""
    bicep = _bicep()
    assert "createMode: keyVaultCreateMode" in _block(bicep, "resource keyVault 'Microsoft.KeyVault/vaults@")
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
    pipeline = yaml.safe_load((REPO / "environment_setup/iac-create-environment-pipeline-bicep.yml").read_text())
    (deploy,) = [s for s in pipeline["stages"] if s["stage"] == "Deploy"]
    steps = deploy["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
    finder = next(i for i, s in enumerate(steps) if s.get("inputs", {}).get("scriptPath", "").endswith("mode.sh"))
    arm = next(i for i, s in enumerate(steps) if s.get("task", "").startswith("AzureResourceManagerTemplate"))
    assert finder < arm and "-keyVaultCreateMode $(KEY_VAULT_CREATE_MODE)" in steps[arm]["inputs"]["overrideParameters"]
    assert "recover_soft_deleted_key_vaults = true" in _terraform()


def test_bicep_deploys_only_after_the_approval_terraform_has():
    for name in ("iac-create-environment-pipeline-bicep.yml", "iac-create-environment-pipeline-tf.yml"):
        pipeline = yaml.safe_load((REPO / "environment_setup" / name).read_text())
        applying = [s for s in pipeline["stages"] if s["stage"] in ("Deploy", "Apply")]
        assert applying, name
        for stage in applying:
            (job,) = stage["jobs"]
            assert "deployment" in job and job["environment"] == "${{ parameters.infrastructureEnvironment }}", name
        (parameter,) = [p for p in pipeline["parameters"] if p["name"] == "infrastructureEnvironment"]
        assert parameter["default"] == "infrastructure"


def test_terraform_is_installed_at_a_pinned_version_before_each_use():
    import re

    pipeline_text = (REPO / "environment_setup/iac-create-environment-pipeline-tf.yml").read_text()
    pipeline = yaml.safe_load(pipeline_text)
    version = next(
        v["value"] for v in pipeline["variables"] if isinstance(v, dict) and v.get("name") == "TERRAFORM_VERSION"
    )
    major, minor, _ = (int(x) for x in version.split("."))
    required = re.search(r'required_version = ">= (\d+)\.(\d+)"', _terraform())
    assert (major, minor) >= (int(required.group(1)), int(required.group(2)))
    install = (REPO / "environment_setup/terraform-install-steps.yml").read_text()
    assert "SHA256SUMS" in install and "sha256sum --check" in install and "task.prependpath" in install
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
