"""What the ff sample's tests share: settings isolated per test, and a throw-away project holding only the ff use
cases (their folder, the data they read, their declaration), with FLAML budgets cut to a second."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ml_service.config import declared_groups, declared_use_cases
from ml_service.util.env_variables import settings_variables

REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP = "ff"
TINY_BUDGET_S = 1.0


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every setting at its default (a developer's .env or shell cannot leak in), the local store (and with it
    the MLflow SQLite registry) in tmp_path, one worker: no pool forked from the test process."""
    for name, default, _ in settings_variables():
        monkeypatch.setenv(name, str(default))
    local = tmp_path / "local"
    monkeypatch.setenv("LOCAL_DIR", str(local))
    monkeypatch.setenv("MAX_WORKERS", "1")
    return local


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created once (its migrations take seconds each time)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def ff_declaration() -> tuple[dict[str, str], list[str]]:
    """The ff use cases as this project declares them ({name: configuration file}), in group order."""
    declared = declared_use_cases(REPO_ROOT)
    members = declared_groups(REPO_ROOT)[GROUP]
    return {name: declared[name].relative_to(REPO_ROOT).as_posix() for name in members}, members


def make_project(root: Path) -> Path:
    """A project of the ff folder, the data it reads, the lock and a declaration of only the ff use cases and group;
    every FLAML budget cut to TINY_BUDGET_S seconds."""
    configs, members = ff_declaration()
    shutil.copytree(REPO_ROOT / "ff", root / "ff", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (root / "data").mkdir()
    for name in ("diabetes.csv", "diabetes.columns.json"):
        shutil.copy(REPO_ROOT / "data" / name, root / "data" / name)
    for path in configs.values():
        raw = json.loads((root / path).read_text())
        raw["model"]["automl"]["time_budget_s"] = TINY_BUDGET_S
        (root / path).write_text(json.dumps(raw, indent=1))
    shutil.copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")  # packaging pins from it
    lines = ["[tool.mlops.use-cases]", *(f'{name} = "{path}"' for name, path in configs.items())]
    lines += ["", "[tool.mlops.groups]", f"{GROUP} = {json.dumps(members)}", ""]
    (root / "pyproject.toml").write_text("\n".join(lines))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, empty_mlflow_db: Path) -> Path:
    """The ff project in tmp_path, the current project of the steps (PROJECT_ROOT), with an empty registry."""
    root = make_project(tmp_path / "project")
    isolated_settings.mkdir(parents=True)
    shutil.copy(empty_mlflow_db, isolated_settings / "mlflow.db")
    monkeypatch.setenv("PROJECT_ROOT", str(root))
    return root


def process_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run as its own process: the project's code first, the platform importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(REPO_ROOT)]), **extra}


def module_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
