"""What the diabetes_regression sample's tests share: settings isolated per test, and a throw-away project holding
only this use case (its folder, its data, its one-line declaration)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ml_service.config import declared_use_cases
from ml_service.util.env_variables import settings_variables

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "diabetes_regression"
CONFIG = declared_use_cases(REPO_ROOT)[NAME].relative_to(REPO_ROOT).as_posix()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every setting at its default (a developer's .env or shell cannot leak in); the local store (and with it
    the MLflow SQLite registry) in tmp_path."""
    for name, default, _ in settings_variables():
        monkeypatch.setenv(name, str(default))
    local = tmp_path / "local"
    monkeypatch.setenv("LOCAL_DIR", str(local))
    monkeypatch.setenv("MAX_WORKERS", "1")
    return local


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project of this use case alone: its folder, the data it reads, its declaration."""
    root = tmp_path / "project"
    shutil.copytree(REPO_ROOT / NAME, root / NAME, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (root / "data").mkdir()
    for name in ("diabetes.csv", "diabetes.columns.json"):
        shutil.copy(REPO_ROOT / "data" / name, root / "data" / name)
    (root / "pyproject.toml").write_text(f'[tool.mlops.use-cases]\n{NAME} = "{CONFIG}"\n')
    return root
