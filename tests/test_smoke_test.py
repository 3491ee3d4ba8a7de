"""The smoke test's pure parts (sample rows, partition sampling), its refusal when nothing answers, and the
``--package`` mode (POST /score only, as through an Azure ML online endpoint) against servers on 127.0.0.1.

The default mode's runs against a real server (pass, failing model, wrong key) are in test_scoring_package.py,
which serves a packaged build context on 127.0.0.1. Here the package mode runs against the same real service,
and against a stand-in for an online endpoint: a FastAPI app with only ``POST /score`` served by uvicorn.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from fastapi import FastAPI, Request  # module level: FastAPI resolves the string annotations here
from fastapi.responses import JSONResponse
from sklearn.linear_model import Ridge

from ml_service.registry.model_set import SINGLE_KEY, model_key
from ml_service.scoring.package import main as package_main
from ml_service.util.smoke_test_scoring_service import choose, main, sample_rows
from tests.test_scoring_support import (
    free_port,
    register_standard_models,
    save_registered,
    serve_package,
    stop,
)


def test_sample_rows_prefers_stored_sample_then_builds_from_columns():
    assert sample_rows({"sample_input": [[1, 2]]}) == [[1, 2]]
    detail = {"input_columns": ["timeStamp", "temp"], "input_schema": {"temp": "number", "timeStamp": "datetime"}}
    assert sample_rows(detail) == [["2017-08-13 06:00", 1.0]]
    assert sample_rows({"input_columns": ["a", "b"]}) == [[1.0, 1.0]]


def test_choose_samples_partitions_per_set():
    models = [{"name": "single"}] + [{"name": f"s/k={i}", "model_set": "s"} for i in range(10)]
    assert [m["name"] for m in choose(models, 2)] == ["single", "s/k=0", "s/k=1"]


def test_exits_2_when_the_service_never_gets_ready(capsys):
    assert main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 2
    assert "not ready" in capsys.readouterr().err


# --- --package mode: models and samples from the package, POST /score only -------------------------


def _service_log_lines(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_package_mode_against_the_real_service(settings, tmp_path, capsys):
    register_standard_models(settings, tmp_path)
    full = tmp_path / "ctx"
    assert package_main(["--output", str(full)]) == 0, capsys.readouterr().err
    # The service runs a package without diabetes_model (the first model of the full package).
    served = tmp_path / "served"
    shutil.copytree(full, served)
    manifest_path = served / "package" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"] = [m for m in manifest["models"] if m["name"] != "diabetes_model"]
    manifest_path.write_text(json.dumps(manifest))
    shutil.rmtree(served / "package" / "models" / "diabetes_model")

    process, url = serve_package(served, {**os.environ, "SCORING_API_KEY": "k3y"})
    try:
        code = main(["--url", url, "--key", "k3y", "--package", str(served), "--partitions", "2"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "3/3 models answered (4 in the package, POST /score only)" in out
        assert "ok   nyc_energy_model" in out and "ok   nyc_energy_regions_model/region=r0002" in out
        assert "region=r0003" not in out  # sampled: 2 partitions of the set

        started = time.monotonic()
        code = main(["--url", url + "/score", "--key", "k3y", "--package", str(full), "--timeout", "30"])
        out = capsys.readouterr().out
        assert code == 1 and "FAIL diabetes_model: HTTP 404" in out and "FAILED: diabetes_model" in out, out
        assert "ok   nyc_energy_model" in out and "4/5 models answered (5 in the package" in out
        assert time.monotonic() - started < 20  # the service's "unknown model" is an answer, not "not ready yet"

        code = main(["--url", url, "--key", "nope", "--package", str(served), "--timeout", "30"])
        out = capsys.readouterr().out
        assert code == 1 and "HTTP 401" in out and "FAILED: nyc_energy_model" in out, out
    finally:
        log = stop(process)
    paths = {line["path"] for line in _service_log_lines(log)}
    assert "/score" in paths and not any(p.startswith("/models") for p in paths), paths


# A stand-in for an Azure ML online endpoint: only POST /score reaches the container, behind the endpoint key.


def _score_only_app(key: str, models: set[str], not_ready_answers: int):
    app = FastAPI()
    app.state.calls = 0

    @app.post("/score")
    async def score(request: Request):
        app.state.calls += 1
        if app.state.calls <= not_ready_answers:
            return JSONResponse({"error": "no healthy upstream"}, status_code=503)
        if request.headers.get("authorization") != f"Bearer {key}":
            return JSONResponse({"error": "bad key"}, status_code=401)
        body = await request.json()
        if body.get("model_name") not in models:
            return JSONResponse({"error": f"unknown model {body.get('model_name')!r}"}, status_code=404)
        return {"model_name": body["model_name"], "model_version": "1", "predictions": [0.0] * len(body["data"])}

    return app


@contextmanager
def _uvicorn_in_thread(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _small_package(folder: Path) -> Path:
    """A package as ml_service.scoring.package lays it out: one model and a model set of three partitions, each a
    registered MLflow model folder (the stand-in server loads none of them)."""
    root = folder / "package"
    single = {SINGLE_KEY: (Ridge().fit(pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 0.0]}), [0.0, 1.0]), {})}
    single[SINGLE_KEY][1]["sample_input"] = [[1, 2], [3, 4]]
    save_registered(root / "models" / "diabetes_model", "diabetes_model", single, {"a": "number", "b": "number"})
    regions = {model_key({"region": r}): (None, {"version": "1"}) for r in ("r1", "r2", "r3")}
    schema = {"timeStamp": "datetime", "temp": "number"}  # no sample input: rows built from the types
    save_registered(root / "models" / "regions_model", "regions_model", regions, schema, ["region"])
    manifest = {
        "kind": "scoring_package",
        "models": [
            {"name": "diabetes_model", "version": "2", "kind": "model", "path": "models/diabetes_model"},
            {"name": "regions_model", "version": "1", "kind": "model_set", "path": "models/regions_model"},
        ],
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    (folder / "Dockerfile").write_text("FROM python:3.11-slim\n")
    return folder


def test_score_only_server_passes_in_package_mode_and_fails_in_default_mode(tmp_path, capsys):
    package = _small_package(tmp_path / "ctx")
    names = {"diabetes_model", "regions_model/region=r1", "regions_model/region=r2", "regions_model/region=r3"}
    app = _score_only_app("k3y", names, not_ready_answers=2)
    with _uvicorn_in_thread(app) as url:
        code = main(["--url", url, "--key", "k3y", "--package", str(package), "--partitions", "2", "--timeout", "20"])
        out = capsys.readouterr().out
        assert code == 0, out
        assert "3/3 models answered (4 in the package, POST /score only)" in out
        assert "ok   diabetes_model: v1 2 predictions" in out  # the two rows of its manifest's sample_input
        assert "ok   regions_model/region=r2: v1 1 predictions" in out and "region=r3" not in out
        assert app.state.calls == 2 + 1 + 3  # two "not ready" answers retried, the readiness call, 3 models

        assert main(["--url", url, "--key", "k3y", "--timeout", "2"]) == 2  # /health is not routed here
        assert "not ready" in capsys.readouterr().err


def test_package_mode_names_the_model_the_endpoint_lacks_and_gives_up_when_never_routed(tmp_path, capsys):
    package = _small_package(tmp_path / "ctx")
    app = _score_only_app("k3y", {"diabetes_model", "regions_model/region=r1"}, not_ready_answers=0)
    with _uvicorn_in_thread(app) as url:
        code = main(["--url", url, "--key", "k3y", "--package", str(package), "--partitions", "2"])
        out = capsys.readouterr().out
        assert code == 1 and "FAIL regions_model/region=r2: HTTP 404" in out, out
        assert out.rstrip().endswith("FAILED: regions_model/region=r2")
    never = _score_only_app("k3y", set(), not_ready_answers=10**6)
    with _uvicorn_in_thread(never) as url:
        started = time.monotonic()
        assert main(["--url", url, "--key", "k3y", "--package", str(package), "--timeout", "2"]) == 2
        assert time.monotonic() - started < 10
        assert "POST /score for diabetes_model not answered after 2 s (HTTP 503)" in capsys.readouterr().err
    assert main(["--url", url, "--package", str(tmp_path / "nothing")]) == 2
    assert "cannot read the package" in capsys.readouterr().err
