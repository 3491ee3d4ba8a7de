"""Registrations racing each other: real processes (tests/registry_worker.py) on a real SQLite store in a
temporary folder, lined up with file gates at the moments that used to go wrong. Whatever the interleaving,
the store stays usable and production ends on the best complete version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_service.registry.mlflow_registry import connect, ensure_experiment, production_model, register_version
from ml_service.util.env_variables import load_settings
from tests.azure_ml_surface import azure_ml_proxy, mlflow_server
from tests.conftest import REPO_ROOT, seed_store

pytestmark = pytest.mark.slow  # real processes and servers

WORKER = REPO_ROOT / "tests" / "registry_worker.py"
TIMEOUT_S = 120


class Worker:
    """A registering process forked by the zygote (tests/registry_worker.py --serve)."""

    def __init__(self, pid: int, out: Path):
        self.pid, self.out = pid, out

    def wait(self) -> int:
        rc = Path(f"{self.out}.rc")
        wait_files(rc)
        return int(rc.read_text())

    def finish(self) -> dict:
        code = self.wait()
        assert code == 0, Path(f"{self.out}.err").read_text()[-3000:]
        return json.loads(self.out.read_text().strip().splitlines()[-1])

    def state(self) -> str:
        return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture(scope="module")
def zygote():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(WORKER), "--serve"]
    process = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    yield process
    process.stdin.close()
    process.wait(TIMEOUT_S)


@pytest.fixture
def start(zygote, gates):
    started: list[Worker] = []

    def launch(tag: str, mse: float, *flags: str) -> Worker:
        out = gates / f"{tag}.out"
        argv = ["--tag", tag, "--mse", str(mse), "--gates", str(gates), *flags]
        zygote.stdin.write(json.dumps({"argv": argv, "env": dict(os.environ), "out": str(out)}) + "\n")
        zygote.stdin.flush()
        started.append(Worker(int(zygote.stdout.readline()), out))
        return started[-1]

    yield launch
    for worker in started:  # none outlives its test, whatever failed
        if not Path(f"{worker.out}.rc").exists():
            os.kill(worker.pid, signal.SIGKILL)  # a stopped process dies of it too


def wait_files(*paths: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"timed out waiting for {[p.name for p in paths if not p.exists()]}"
        time.sleep(0.02)


def complete_versions(client) -> dict[str, dict[str, str]]:
    return {str(v.version): dict(v.tags) for v in client.search_model_versions("name='m'")}


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    folder = tmp_path / "gates"
    folder.mkdir()
    return folder


@pytest.fixture
def settings_of(isolated_settings: Path, empty_mlflow_db: Path):
    """The settings of a store: "new" (no file yet: the first processes create it), "empty" (created, nothing
    registered) or "in-production" (a version of m in production, mse 50)."""

    def make(store: str):
        settings = load_settings()
        if store != "new":
            seed_store(isolated_settings, empty_mlflow_db)
        if store == "in-production":
            client = connect(settings)
            run = client.create_run(ensure_experiment(client, "seed", settings))
            client.log_text(run.info.run_id, "# seed\n", "model/MLmodel")
            register_version(
                client, "m", run.info.run_id, "model", {}, "production", metrics={"mse": 50.0}, lineage={},
                data_hash="h", metric="mse", direction="minimize",
            )  # fmt: skip
        return settings

    return make


@pytest.mark.parametrize("runs", [2, 4])
@pytest.mark.parametrize("store", ["new", "in-production"])
def test_runs_at_once_keep_the_store_sound_and_production_on_the_best(settings_of, start, gates, runs, store):
    settings = settings_of(store)
    values = [30.0, 10.0, 40.0, 20.0][:runs]
    workers = [start(f"w{i}", mse) for i, mse in enumerate(values)]
    wait_files(*(gates / f"w{i}.imported" for i in range(runs)))
    (gates / "go").touch()  # every process opens the store at this moment (a new one: creates and migrates it)
    results = [w.finish() for w in workers]
    client = connect(settings)
    best = min(values)
    winner = production_model(client, "m", "production")
    assert winner is not None and winner.metrics == {"mse": best}
    assert winner.tags["worker"] == f"w{values.index(best)}"
    versions = complete_versions(client)
    assert all(tags["registration"] == "complete" for tags in versions.values())
    assert len(versions) == (store == "in-production") + sum(r["version"] is not None for r in results)
    for result in results:  # whoever did not end in production says why
        assert result["production_version"] is not None and result["reason"]


@pytest.fixture(scope="module")
def azure_ml(tmp_path_factory, empty_mlflow_db):
    """A real mlflow server behind the proxy answering as Azure ML's MLflow surface (tests/azure_ml_surface.py)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), empty_mlflow_db) as url:
        with azure_ml_proxy(url) as (proxy, calls):
            yield proxy, calls


@pytest.mark.parametrize("order", ["better-first", "worse-first"])
@pytest.mark.parametrize("store", ["sqlite", "azure-ml-proxy"])
def test_promotion_race_ends_on_the_better_model_in_either_order(
    settings_of, start, gates, order, store, request, monkeypatch
):
    name = "m"
    if store == "sqlite":
        settings = settings_of("empty")
    else:  # over REST: no lock spans the processes, only the claim-and-check protocol
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("azure_ml")[0])
        settings, name = load_settings(), f"m-{order}"
    better = start("better", 2901.0, "--hold-claim", "--name", name)
    worse = start("worse", 3976.0, "--hold-claim", "--name", name)
    wait_files(gates / "better.imported", gates / "worse.imported")
    (gates / "go").touch()
    # both have checked "nothing in production" and wait at the write that moves production
    wait_files(gates / "better.ready", gates / "worse.ready")
    first, second = ("better", "worse") if order == "better-first" else ("worse", "better")
    processes = {"better": better, "worse": worse}
    (gates / f"{first}.claim").touch()
    results = {first: processes[first].finish()}
    (gates / f"{second}.claim").touch()
    results[second] = processes[second].finish()

    client = connect(settings)
    current = production_model(client, name, "production")
    assert current is not None and current.metrics == {"mse": 2901.0}
    assert results["better"]["promoted"] is True
    if order == "better-first":
        lost = results["worse"]
        assert lost["promoted"] is False and lost["production_version"] == current.version
        assert lost["reason"] == (
            f"lost the promotion race to version {current.version}: candidate mse=3976 vs production "
            f"(version {current.version}) mse=2901: not lower, keeping production"
        )
        versions = {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}
        assert versions[lost["version"]]["production"] == "lost"
    else:
        assert results["worse"]["promoted"] is True  # production for a moment, then rightly replaced


@pytest.mark.parametrize("release", ["together", "one-after-the-other"])
@pytest.mark.parametrize("store", ["sqlite", "azure-ml-proxy"])
def test_two_model_sets_built_on_the_same_production_never_both_win(
    settings_of, start, gates, release, store, request, monkeypatch
):
    """Each set lacks the other's partitions, so at most one may take production, and each run's report must
    match the end state (the second set's version may be the lower one: it still must not displace the first)."""
    name = "m"
    if store == "sqlite":
        settings = settings_of("empty")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("azure_ml")[0])
        settings, name = load_settings(), f"set-{release}"
    sets = {tag: start(tag, 1.0, "--hold-claim", "--base", "", "--name", name) for tag in ("s1", "s2")}
    wait_files(gates / "s1.imported", gates / "s2.imported")
    (gates / "go").touch()
    wait_files(gates / "s1.ready", gates / "s2.ready")
    if release == "together":
        (gates / "s1.claim").touch()
        (gates / "s2.claim").touch()
        results = {tag: worker.finish() for tag, worker in sets.items()}
    else:
        created = {tag: int((gates / f"{tag}.created").read_text()) for tag in sets}
        first, second = sorted(sets, key=created.get, reverse=True)  # the higher version claims first
        (gates / f"{first}.claim").touch()
        results = {first: sets[first].finish()}
        (gates / f"{second}.claim").touch()
        results[second] = sets[second].finish()
        assert results[first]["promoted"] and not results[second]["promoted"]
        assert results[second]["reason"].startswith(f"lost the promotion race: version {results[first]['version']}")
    current = production_model(connect(settings), name, "production")
    winners = [r["version"] for r in results.values() if r["promoted"]]
    assert len(winners) <= 1 and (current.version if current else None) == (winners[0] if winners else None)
    for result in results.values():
        assert result["promoted"] or "rerun to build on the current production" in result["reason"]


def test_a_paused_registration_survives_another_runs_cleanup_and_a_killed_one_does_not(settings_of, start, gates):
    settings = settings_of("in-production")
    paused = start("paused", 5.0, "--stop-after-create")
    killed = start("killed", 1.0, "--kill-after-create")
    wait_files(gates / "paused.imported", gates / "killed.imported")
    (gates / "paused.go").touch()
    (gates / "killed.go").touch()
    wait_files(gates / "paused.created", gates / "killed.created")
    assert killed.wait() == -signal.SIGKILL
    deadline = time.monotonic() + TIMEOUT_S
    while paused.state() != "T":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    paused_version = (gates / "paused.created").read_text()
    killed_version = (gates / "killed.created").read_text()

    cleaner = start("cleaner", 20.0)
    (gates / "cleaner.go").touch()
    cleaned = cleaner.finish()
    client = connect(settings)
    versions = complete_versions(client)
    assert killed_version not in versions, "a dead run's pending version is removed"
    assert versions[paused_version]["registration"] == "pending", "a live run's pending version is kept"
    assert cleaned["promoted"] and production_model(client, "m", "production").version == cleaned["version"]

    os.kill(paused.pid, signal.SIGCONT)
    resumed = paused.finish()
    assert resumed["version"] == paused_version and resumed["promoted"]
    current = production_model(client, "m", "production")
    assert current.version == paused_version and current.metrics == {"mse": 5.0}
    assert all(tags["registration"] == "complete" for tags in complete_versions(client).values())
