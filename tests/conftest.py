"""Shared fixtures: every test gets its own local store, whatever the developer's shell or .env says; platform tests
get a temporary project of fixture use cases (`tests/fixtures`), never the samples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ml_service.util.env_variables import load_settings, settings_variables
from tests.fixtures.projects import toy_config, toy_frame, write_project

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pin every setting to its default (so a .env cannot leak in) and point the local store at tmp_path."""
    for name, default, _ in settings_variables():
        monkeypatch.setenv(name, str(default))
    local = tmp_path / "local"
    monkeypatch.setenv("LOCAL_DIR", str(local))
    return local


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its schema created once; creating it (migrations) costs seconds each time."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def seed_store(local: Path, template: Path) -> None:
    """Start a local folder with an empty, already-migrated registry (same as a first run would create)."""
    local.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, local / "mlflow.db")


def copy_project(root: Path, packages: tuple[str, ...], empty_db: Path) -> Path:
    """A copy of the code a run needs (`packages` plus the sample data) with an empty registry, as a fresh clone
    would have after its first run."""
    for folder in packages:
        shutil.copytree(REPO_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data").mkdir()
    shutil.copy(REPO_ROOT / "data" / "diabetes.csv", root / "data" / "diabetes.csv")
    seed_store(root / "local", empty_db)
    return root


@pytest.fixture
def settings(isolated_settings: Path, empty_mlflow_db: Path):
    seed_store(isolated_settings, empty_mlflow_db)
    return load_settings()


def run_module(module: str, *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None, timeout: float = 600):
    """Run `python -m module args` as a real process, with the repository importable."""
    merged = {**os.environ, **(env or {})}
    merged["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO_ROOT)])
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def forget_loaded_code() -> None:
    """What a new process would not remember: built use cases, model-code hashes, the fixture package's modules."""
    from ml_service.pipelines import training
    from ml_service.use_case import _CACHE

    _CACHE.clear()
    training._code_hash.cache_clear()
    for name in [m for m in sys.modules if m == "toyuc" or m.startswith("toyuc.")]:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_settings: Path, empty_mlflow_db: Path):
    """`make(use_cases, data, groups)` writes a project of fixture use cases in tmp_path/project and makes it the
    one in use (PROJECT_ROOT, current folder, importable), with an empty registry in LOCAL_DIR; by default one
    partitioned use case `toy` (6 stores) on data/toy.csv. One worker unless a test asks for more."""
    root = tmp_path / "project"
    seed_store(isolated_settings, empty_mlflow_db)
    monkeypatch.setenv("MAX_WORKERS", "1")

    def make(use_cases=None, data=None, groups=None) -> Path:
        write_project(
            root,
            use_cases if use_cases is not None else {"toy": toy_config()},
            data if data is not None else {"data/toy.csv": toy_frame()},
            groups,
        )
        monkeypatch.setenv("PROJECT_ROOT", str(root))
        monkeypatch.chdir(root)
        monkeypatch.syspath_prepend(str(root))
        forget_loaded_code()
        return root

    yield make
    forget_loaded_code()


def yaml_mappings(node):
    """Every mapping in a loaded YAML document, recursively (steps, jobs, template uses)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from yaml_mappings(value)
    elif isinstance(node, list):
        for item in node:
            yield from yaml_mappings(item)


def yaml_strings(node):
    """Every string in a loaded YAML document, recursively (commands, scripts, conditions)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from yaml_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from yaml_strings(item)
