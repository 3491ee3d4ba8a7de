"""The point of the platform, proved end to end: a team adds a brand-new use case (its own folder, its own config, its
own CSV with a category column and 20 partitions) to a project made from the template, changes nothing under
ml_service/, and the whole local flow works with real processes: train → evaluate → register → package → serve →
one /score call per partition, a bad category refused with a 422 naming the column; and the same use case renders
to an Azure ML pipeline job that the SDK validates offline.

The project is a copy of the platform (ml_service/, requirements.lock) with no sample in it, so this also proves
the platform needs no sample. Every command runs in the project (or, for serving, in the package folder, as the
image does) with nothing else on the import path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, seed_store

NAME = "kiosk"
CHANNELS = ("web", "shop", "phone")
CHANNEL_UNITS = {"web": 20.0, "shop": 35.0, "phone": 8.0}
STORES = ["north/east", "Zürich 1", *(f"store {i:02d}" for i in range(2, 20))]  # 20, two with awkward names

MODEL_CODE = '''"""Units sold: a level per sales channel plus a price slope, by least squares (NumPy, pandas)."""

import numpy as np

CHANNELS = ("web", "shop", "phone")


def design(frame):
    channel = frame["channel"].astype(str).to_numpy()
    levels = [(channel == c).astype(float) for c in CHANNELS]
    return np.column_stack([*levels, frame["price"].to_numpy(dtype=float)])


class ChannelLevels:
    def __init__(self, coef):
        self.coef = coef

    def predict(self, frame):
        return design(frame) @ self.coef


class BasketModel:
    def __init__(self, config, params):
        self.label = config.label
        self.holdout = int(params.get("holdout", 3))

    def split(self, frame):
        return frame.iloc[: -self.holdout], frame.iloc[-self.holdout :]

    def fit(self, train):
        coef = np.linalg.lstsq(design(train), train[self.label].to_numpy(dtype=float), rcond=None)[0]
        return ChannelLevels(coef)

    def metrics(self, actual, predicted):
        return {"mae": float(np.mean(np.abs(np.asarray(actual) - np.asarray(predicted))))}
'''

CONFIG = {
    "description": "Units sold per store and sales channel.",
    "code": "kiosk.model:BasketModel",
    "data": {"path": "data/basket.csv"},
    "columns": {
        "store": {"type": "string"},
        "channel": {"type": "category", "allowed": list(CHANNELS)},
        "price": {"type": "number", "min": 0, "max": 100},
        "units": {"type": "number", "min": 0},
    },
    "label": "units",
    "partition_columns": ["store"],
    "checks": {"min_rows": 12},
    "evaluation": {"metric": "mae", "direction": "minimize"},
    "parallel": {"error_threshold": 0, "mini_batch_size": 5},
    "model": {"holdout": 3},
}


def basket_data(rows: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(11)
    frames = []
    for i, store in enumerate(STORES):
        channel = [CHANNELS[j % 3] for j in range(rows)]
        price = rng.uniform(2, 8, rows).round(2)
        units = [CHANNEL_UNITS[c] + i - 2 * (p - 5) + rng.normal(0, 0.2) for c, p in zip(channel, price, strict=True)]
        frames.append(pd.DataFrame({"store": store, "channel": channel, "price": price, "units": np.round(units, 3)}))
    return pd.concat(frames, ignore_index=True)


def new_project(root: Path) -> Path:
    """A project as a team gets it from the template, without the samples, plus their one folder and one line."""
    shutil.copytree(REPO_ROOT / "ml_service", root / "ml_service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")
    (root / "environment_setup").mkdir()
    for name in ("parallel-requirements.lock", "parallel-driver.in"):  # the Azure ML parallel step's environment
        shutil.copy(REPO_ROOT / "environment_setup" / name, root / "environment_setup" / name)
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (root / "pyproject.toml").write_text(
        '[project]\nname = "kiosk-project"\nversion = "0.1.0"\nrequires-python = ">=3.11,<3.12"\n'
        f"dependencies = {json.dumps(dependencies)}\n\n"
        f'[tool.mlops.use-cases]\n{NAME} = "{NAME}/config.json"\n'
    )
    (root / NAME).mkdir()
    (root / NAME / "__init__.py").write_text("")
    (root / NAME / "model.py").write_text(MODEL_CODE)
    (root / NAME / "config.json").write_text(json.dumps(CONFIG, indent=2))
    (root / "data").mkdir()
    basket_data().to_csv(root / "data" / "basket.csv", index=False)
    return root


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def environment(tmp_path: Path, empty_mlflow_db: Path) -> dict[str, str]:
    local = tmp_path / "local"
    seed_store(local, empty_mlflow_db)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but the project on the path
    env.update(PROJECT_ROOT=str(tmp_path / "project"), LOCAL_DIR=str(local), MLFLOW_TRACKING_URI="", MAX_WORKERS="2")
    return env


def run(module: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def wait_until_serving(server: subprocess.Popen, url: str, deadline_s: float = 120) -> None:
    """Ready when /health answers 200; a server that exits instead fails the test with its output."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited ({server.returncode}): {server.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # a readiness poll (the port opens when the app is up), not a wait for work to finish
    raise AssertionError(f"no answer from {url}/health within {deadline_s} s")


@pytest.mark.slow
def test_a_new_use_case_trains_registers_packages_serves_and_renders_for_azure_ml(tmp_path, environment, monkeypatch):
    project = new_project(tmp_path / "project")
    platform = tree_digest(project / "ml_service")
    assert not [p for p in (REPO_ROOT / "ml_service").rglob("*.py") if NAME in p.read_text()]  # not named there

    trained = run("ml_service.pipelines.run_train_pipeline", "--use-case", NAME, cwd=project, env=environment)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "train: kiosk: 20 trained, 0 unchanged (skipped), 0 failed" in trained.stdout
    assert "register: kiosk version 1: model set of 20 (20 promoted), now in production" in trained.stdout
    assert (tmp_path / "local" / "runs" / NAME / "history" / "index.html").is_file()

    package = tmp_path / "package"
    packaged = run("ml_service.scoring.package", "--output", str(package), cwd=project, env=environment)
    assert packaged.returncode == 0, packaged.stderr[-3000:]
    manifest = json.loads((package / "package" / "manifest.json").read_text())
    assert [(m["name"], m["kind"], m["partitions"]) for m in manifest["models"]] == [(NAME, "model_set", 20)]
    assert (package / NAME / "model.py").read_text() == MODEL_CODE  # the use case's code ships with the service

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "ml_service.scoring.serve", "--package", str(package), "--port", str(port)]
    # in the package folder, as the image runs it: only what was packaged can be imported
    server = subprocess.Popen(serve, cwd=package, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(server, url)
        models = {m["name"] for m in httpx.get(f"{url}/models", params={"prefix": f"{NAME}/"}, timeout=10).json()}
        assert len(models) == 20
        for i, store in enumerate(STORES):
            name = f"{NAME}/store={_escaped(store)}"
            assert name in models
            rows = [["web", 5.0], ["phone", 4.0]]
            answer = httpx.get(f"{url}/score", params={"model_name": name, "data": json.dumps(rows)}, timeout=10)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["model_set"] == NAME and body["model_version"] == "1"
            expected = [CHANNEL_UNITS["web"] + i, CHANNEL_UNITS["phone"] + i + 2]
            assert body["predictions"] == pytest.approx(expected, abs=1.0), store
        posted = httpx.post(f"{url}/score", json={"model_name": f"{NAME}/store=store%2005", "data": [["shop", 5]]})
        assert posted.status_code == 200 and posted.json()["predictions"] == pytest.approx([40.0], abs=1.0)

        bad = httpx.get(f"{url}/score", params={"model_name": f"{NAME}/store=store%2003", "data": '[["fax", 5.0]]'})
        assert bad.status_code == 422
        assert bad.json()["field"] == "data[0][0]"
        assert bad.json()["detail"] == "data[0][0]: column 'channel' must be one of [web, shop, phone], got 'fax'"
    finally:
        server.terminate()
        server.wait(timeout=30)

    azure = tmp_path / "azureml"
    rendered = run(
        "ml_service.pipelines.azureml.run_pipeline", "--use-case", NAME, "--dry-run", "--output", str(azure),
        cwd=project, env=environment,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    assert "validated offline by the Azure ML SDK" in rendered.stdout
    from ml_service.pipelines.azureml.builder import validation_errors
    from ml_service.pipelines.azureml.job_yaml import load_back

    monkeypatch.chdir(azure)  # the SDK resolves the parallel task's `code: ./code` against the current folder
    job = load_back(azure / "pipeline.yml")
    assert validation_errors(job) == {}
    assert list(job.jobs) == ["prepare", "train", "evaluate", "register"]
    assert "--use-case kiosk" in job.jobs["prepare"].component.command
    assert job._to_dict()["jobs"]["train"]["mini_batch_size"] == "5"  # the use case's parallel settings
    assert (azure / "code" / NAME / "model.py").is_file() and (azure / "code" / "ml_service").is_dir()
    assert not (azure / "code" / "local").exists()

    assert tree_digest(project / "ml_service") == platform  # the platform's files were not changed


def _escaped(store: str) -> str:
    from urllib.parse import quote

    return quote(store, safe="")
