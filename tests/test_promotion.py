"""environments.yml and the dev -> registry -> test -> prod promotion, offline.

The registry assets are built with azure-ai-ml and checked by its own schema (dump, load back); nothing here
reaches Azure. The packaging of fetched models is real: a folder laid out as `fetch` writes it is packaged and
the package's manifest carries the promoted versions and their lineage.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ml_service.registry import azureml_promote as promote
from ml_service.util import environments
from tests.conftest import REPO_ROOT


def _run(*args: str, cwd: Path = REPO_ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


# --- environments.yml ---------------------------------------------------------------------------------


def test_the_repositorys_environments_file_is_valid_and_ordered():
    config = environments.load()
    assert config.promotion == ["dev", "test", "prod"]
    assert config.for_branch("refs/heads/main") == "dev"
    assert config.next_after("dev") == "test" and config.next_after("prod") is None
    assert len({e.workspace for e in config.environments.values()}) == 3


def test_shell_output_is_what_the_ci_steps_eval():
    result = subprocess.run(
        ["bash", "-c", 'eval "$(python -m ml_service.util.environments --branch main --environment "" '
         '--format shell)" && echo "$DEPLOY_ENVIRONMENT $WORKSPACE_NAME $RESOURCE_GROUP $AZUREML_REGISTRY_NAME"'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = environments.load()
    dev = config.environments["dev"]
    assert result.stdout.split() == ["dev", dev.workspace, dev.resource_group, config.registry]


def test_environment_wins_over_branch_and_values_are_quoted(tmp_path):
    config = environments.load()
    assert config.variables("prod")["WORKSPACE_NAME"] == config.environments["prod"].workspace
    text = environments.render({"A": "x y; rm -rf /"}, "shell")
    assert text == "export A='x y; rm -rf /'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--branch", "feature/x"], "branch 'feature/x' maps to no environment"),
        (["--environment", "staging"], "no environment 'staging'"),
        ([], "give --branch REF or --environment NAME"),
    ],
)
def test_unknown_branch_or_environment_is_one_line_exit_2(args, message):
    result = _run("ml_service.util.environments", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_a_broken_file_names_the_field(tmp_path):
    bad = tmp_path / "environments.yml"
    bad.write_text(
        "registry: r\nenvironments: {dev: {resource_group: rg, workspace: ws}}\npromotion: [dev, qa]\nbranches: {}\n"
    )
    with pytest.raises(environments.EnvironmentsError, match="promotion names"):
        environments.load(bad)
    bad.write_text("registry: r\nenvironments: {dev: {resource_group: 'a b', workspace: ws}}\n")
    with pytest.raises(environments.EnvironmentsError, match="environments.dev.resource_group"):
        environments.load(bad)


# --- the registry assets ------------------------------------------------------------------------------


def _ref():
    return promote.ModelRef("diabetes_model", "7", "run-abc")


def test_registry_model_keeps_name_version_and_lineage():
    source = {"run_id": "run-abc", "data_hash": "d41d8", "git_commit": "cafe", "build_id": "41", "metric.mse": "2.5"}
    tags = promote.lineage_tags(source, _ref(), "dev", "mlops-dev-aml", build_id="99")
    path = promote.workspace_model_path("sub", "rg", "mlops-dev-aml", "diabetes_model", "7")
    model = promote.registry_model(_ref(), path, tags)
    assert (model.name, model.version) == ("diabetes_model", "7")
    assert {k: model.tags[k] for k in source} == source  # every source tag kept as it was
    assert model.tags["source_version"] == "7" and model.tags["promoted_from_environment"] == "dev"
    assert model.tags["promotion_build_id"] == "99"
    assert promote.validation_errors(model) == []
    assert (
        promote.registry_asset_id("reg", "diabetes_model", "7")
        == "azureml://registries/reg/models/diabetes_model/versions/7"
    )


def test_the_sdk_validation_catches_a_bad_asset():
    tags = promote.lineage_tags({"run_id": "run-abc", "data_hash": "h"}, _ref(), "dev", "ws")
    bad_type = promote.registry_model(_ref(), "azureml://x", tags, model_type="not_a_model_type")
    assert promote.validation_errors(bad_type)
    no_hash = promote.registry_model(_ref(), "azureml://x", promote.lineage_tags({}, _ref(), "dev", "ws"))
    assert "tag data_hash missing" in promote.validation_errors(no_hash)


def test_a_run_id_that_is_not_the_packages_is_refused():
    with pytest.raises(promote.PromotionError, match="run_id tag other"):
        promote.lineage_tags({"run_id": "other"}, _ref(), "dev", "ws")


# --- the CLI, dry run ---------------------------------------------------------------------------------


def _package(folder: Path, models: list[dict]) -> Path:
    (folder / "package").mkdir(parents=True)
    (folder / "package" / "manifest.json").write_text(json.dumps({"kind": "scoring_package", "models": models}))
    return folder


def test_share_and_fetch_dry_run_need_no_credentials(tmp_path):
    package = _package(tmp_path / "pkg", [{"name": "diabetes_model", "version": "7", "run_id": "run-abc"}])
    record_file = tmp_path / "promotion" / "promotion.json"
    env = {"PATH": "/usr/bin:/bin", "BUILD_ID": "123", "AZURE_SUBSCRIPTION_ID": ""}
    shared = _run(
        "ml_service.registry.azureml_promote", "share", "--from", "dev", "--package", str(package),
        "--promotion-file", str(record_file), "--dry-run", env=env,
    )  # fmt: skip
    assert shared.returncode == 0, shared.stderr
    assert "workspaces/mlops-dev-aml/models/diabetes_model/versions/7" in shared.stdout
    record = json.loads(record_file.read_text())
    assert record["dry_run"] is True and record["registry"] == environments.load().registry
    (item,) = record["models"]
    assert item["asset_id"].endswith("/models/diabetes_model/versions/7")
    assert item["tags"]["run_id"] == "run-abc" and item["tags"]["promotion_build_id"] == "123"

    fetched = _run(
        "ml_service.registry.azureml_promote", "fetch", "--promotion-file", str(record_file),
        "--output", str(tmp_path / "models"), "--dry-run", env=env,
    )  # fmt: skip
    assert fetched.returncode == 0 and item["asset_id"] in fetched.stdout
    assert not (tmp_path / "models").exists()
    # A dry run's record has placeholder tags: a real fetch refuses it before asking Azure anything.
    real = _run(
        "ml_service.registry.azureml_promote", "fetch", "--promotion-file", str(record_file),
        "--output", str(tmp_path / "models"), env={**env, "AZURE_SUBSCRIPTION_ID": "00000000"},
    )  # fmt: skip
    assert real.returncode == 2 and "share --dry-run" in real.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["share", "--from", "prod"], "prod is the last environment"),
        (["share", "--from", "qa"], "no environment 'qa'"),
        (["share", "--from", "dev", "--no-dry-run"], "AZURE_SUBSCRIPTION_ID is not set"),
    ],
)
def test_share_refuses_with_one_line(tmp_path, argv, message):
    package = _package(tmp_path / "pkg", [{"name": "m", "version": "1", "run_id": "r"}])
    args = [*argv, "--package", str(package), "--promotion-file", str(tmp_path / "p.json")]
    dry = "--no-dry-run" not in args
    args = [a for a in args if a != "--no-dry-run"] + (["--dry-run"] if dry else [])
    result = _run(
        "ml_service.registry.azureml_promote", *args, env={"PATH": "/usr/bin:/bin", "AZURE_SUBSCRIPTION_ID": ""}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_an_empty_package_is_refused(tmp_path):
    with pytest.raises(promote.PromotionError, match="lists no model"):
        promote.package_models(_package(tmp_path / "pkg", []))


# --- packaging what fetch wrote (real) ----------------------------------------------------------------


@pytest.mark.slow
def test_package_models_from_a_fetched_folder_keeps_versions_and_lineage(tmp_path):
    from sklearn.linear_model import Ridge

    from tests.test_scoring_support import save_single

    models = tmp_path / "models"
    folder = save_single(
        Ridge().fit([[0.0], [1.0]], [0.0, 1.0]), models / "diabetes_model", [[0.5]], input_types={"x": "number"}
    )
    item = {
        "name": "diabetes_model",
        "version": "7",
        "asset_id": promote.registry_asset_id("mlops-registry", "diabetes_model", "7"),
        "tags": {"run_id": "run-abc", "data_hash": "d41d8", "source_version": "7"},
    }
    (models / promote.FETCHED_MODELS_FILE).write_text(json.dumps({"models": [promote.fetched_entry(item)]}))
    out = tmp_path / "package"
    result = _run("ml_service.scoring.package", "--models-from", str(models), "--output", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "package" / "manifest.json").read_text())
    (entry,) = manifest["models"]
    assert (entry["name"], entry["version"], entry["run_id"]) == ("diabetes_model", "7", "run-abc")
    assert entry["source"] == item["asset_id"] and entry["lineage"]["data_hash"] == "d41d8"
    assert (out / "package" / "models" / "diabetes_model" / "MLmodel").is_file()
    assert (out / "Dockerfile").is_file()

    shutil.rmtree(folder)
    missing = _run("ml_service.scoring.package", "--models-from", str(models), "--output", str(tmp_path / "p2"))
    assert missing.returncode == 1 and "no model folder for diabetes_model" in missing.stderr
    assert not (tmp_path / "p2").exists()
