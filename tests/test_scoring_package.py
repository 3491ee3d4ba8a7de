"""Packaging and serving for real: build context from a tmp registry, determinism, uvicorn on 127.0.0.1, smoke test."""

from __future__ import annotations

import json
import os
import re
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient

from ml_service.scoring.app import create_app
from ml_service.scoring.model_store import ModelStore
from ml_service.scoring.package import BASE_IMAGE, dockerfile, parse_lock, requirement_closure, use_case_packages
from ml_service.scoring.package import main as package_main
from ml_service.util.env_variables import load_settings
from ml_service.util.smoke_test_scoring_service import main as smoke_main
from tests.fixtures.projects import toy_config
from tests.test_scoring_support import (
    DIABETES_ROWS,
    ENERGY_ROWS,
    REPO_ROOT,
    SHOP_ALLOWED,
    SHOP_ROWS,
    SHOP_TYPES,
    free_port,
    register_folder,
    register_standard_models,
    save_single,
    serve_package,
    shop_model,
    stop,
)

pytestmark = pytest.mark.slow
SET = "nyc_energy_regions_model"
LOCK = """\
a==1.0
    # via mlops-template (pyproject.toml)
b==2.0 ; sys_platform != 'win32'
    # via
    #   a
    #   z
c==3.0
    # via b
z==9.0
    # via dev-tool
"""


def test_requirement_closure_follows_via_comments():
    assert set(parse_lock(LOCK)["b"][1]) == {"a", "z"}
    assert requirement_closure(LOCK, ["a", "missing"]) == ["a==1.0", "b==2.0 ; sys_platform != 'win32'", "c==3.0"]


def test_package_refuses_without_production_models(settings, tmp_path, capsys):
    assert package_main(["--output", str(tmp_path / "ctx")]) == 1
    err = capsys.readouterr().err
    assert "no model in production" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ctx").exists()


def smoke(capsys, *args: str) -> tuple[int, str, str]:
    code = smoke_main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_package_serves_what_the_registry_serves_and_smoke_test(settings, tmp_path, capsys):
    register_standard_models(settings, tmp_path)
    out = tmp_path / "ctx"
    assert package_main(["--output", str(out)]) == 0, capsys.readouterr().err
    manifest_bytes = (out / "package" / "manifest.json").read_bytes()
    assert package_main(["--output", str(out)]) == 0, capsys.readouterr().err
    assert (out / "package" / "manifest.json").read_bytes() == manifest_bytes  # same registry state, same bytes
    manifest = json.loads(manifest_bytes)
    assert [(m["name"], m["version"], m["kind"]) for m in manifest["models"]] == [
        ("diabetes_model", "1", "model"),
        ("nyc_energy_model", "1", "model"),
        (SET, "1", "model_set"),
    ]
    assert manifest["models"][0]["metrics"] == {"rmse": 1.5}
    assert all(len(sha) == 64 for m in manifest["models"] for sha in m["files"].values())
    written = (out / "Dockerfile").read_text()
    assert "USER 10001" in written and "HEALTHCHECK" in written
    assert '"--host", "0.0.0.0"' in written and "EXPOSE 5001" in written
    # Built from the same bytes every time: the base image by digest, exactly the hashed files of the lock.
    (base,) = re.findall(r"^FROM (\S+)$", written, flags=re.MULTILINE)
    assert base == BASE_IMAGE and re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base)
    assert "pip install --require-hashes -r /app/requirements.txt" in written
    requirements = (out / "requirements.txt").read_text()
    assert "fastapi==" in requirements and "scikit-learn==" in requirements and "mlflow" not in requirements
    entries = [e for e in re.split(r"\n(?=\S)", requirements) if e.strip() and not e.startswith("#")]
    assert len(entries) > 20
    for entry in entries:
        assert re.search(r"\\\n\s+--hash=sha256:[0-9a-f]{64}", entry), entry
    pins = {e.split("==")[0]: e.split("==")[1].split()[0] for e in entries}
    lock = parse_lock((REPO_ROOT / "requirements.lock").read_text())
    assert all(lock[name][0].split("==")[1].split()[0] == version for name, version in pins.items())
    # pickled models import their use case's code: every declared use case's package is shipped
    shipped = use_case_packages(REPO_ROOT)
    assert shipped and all(list((out / name).rglob("*.py")) for name in shipped), shipped
    assert not (out / "tests").exists() and not (out / "bootstrap").exists()
    # each model is the registered MLflow model, as downloaded: MLmodel, the shipped loader, the data folder
    single = out / "package" / "models" / "diabetes_model"
    assert (single / "MLmodel").is_file() and (single / "code" / "mlops_pyfunc_model.py").is_file()
    assert (single / "data" / "model" / "manifest.json").is_file()
    assert "data/model/models/model/model.pkl" in manifest["models"][0]["files"]
    assert not (out / "ml_service" / "registry" / "mlflow_registry.py").exists()
    assert not list(tmp_path.glob(".ctx.*"))  # no staging folder left behind

    registry_client = TestClient(create_app(ModelStore.from_registry(settings), settings))
    key_file = tmp_path / "key"
    key_file.write_text("k3y\n")
    # one worker: the model.json edited below belongs to a model this worker has loaded (a worker that had not would
    # refuse the edited file: its sha256 no longer matches the manifest)
    process, url = serve_package(out, {**os.environ, "SCORING_API_KEY": "k3y"}, free_port(), "--workers", "1")
    auth = {"Authorization": "Bearer k3y"}
    try:
        cases = (
            ("diabetes_model", DIABETES_ROWS),
            ("nyc_energy_model", ENERGY_ROWS),
            (f"{SET}/region=r0002", ENERGY_ROWS),
        )
        for name, rows in cases:
            payload = {"model_name": name, "data": rows}
            served = httpx.post(f"{url}/score", json=payload, headers=auth, timeout=10).json()
            assert served == registry_client.post("/score", json=payload).json()
        # The pre-traffic check's requests (online_endpoint.invoke_smoke_test): one per model, from its input
        # example, each answered with one prediction per row by the packaged service.
        samples = json.loads((out / "sample_request.json").read_text())
        assert [r["model_name"] for r in samples] == ["diabetes_model", "nyc_energy_model", f"{SET}/region=r0001"]
        for request in samples:
            answer = httpx.post(f"{url}/score", json=request, headers=auth, timeout=10)
            assert answer.status_code == 200 and len(answer.json()["predictions"]) == len(request["data"])
        params = {"model_name": "diabetes_model", "data": json.dumps(DIABETES_ROWS)}
        get = httpx.get(f"{url}/score", params=params, headers=auth)
        assert get.status_code == 200 and len(get.json()["predictions"]) == 2
        assert httpx.get(f"{url}/score", params=params).status_code == 401
        assert httpx.get(f"{url}/models", headers=auth).headers["x-total-count"] == "5"

        code, stdout, _ = smoke(capsys, "--url", url, "--key-file", str(key_file), "--partitions", "2")
        assert code == 0 and "4/4 models answered (5 servable)" in stdout, stdout
        code, _, stderr = smoke(capsys, "--url", url, "--key", "nope")
        assert code == 1 and "401" in stderr
        # a package whose diabetes sample has the wrong width: the service answers 422 to the smoke test
        wrong = tmp_path / "wrong"
        shutil.copytree(out, wrong)
        model_manifest = wrong / "package" / "models" / "diabetes_model" / "data" / "model" / "manifest.json"
        metadata = json.loads(model_manifest.read_text())
        metadata["models"][""]["sample_input"] = [[1, 2, 3]]
        model_manifest.write_text(json.dumps(metadata))
        code, stdout, _ = smoke(
            capsys, "--url", url + "/score", "--key", "k3y", "--partitions", "1", "--package", str(wrong)
        )
        assert code == 1 and "FAILED: diabetes_model" in stdout and "ok   nyc_energy_model" in stdout, stdout
    finally:
        log = stop(process)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    traced = [line for line in lines if line.get("traceparent") and line["path"] == "/score"]
    assert len(traced) == 7 and [line["status"] for line in traced].count(422) == 1


def test_a_floating_base_image_is_refused(settings, tmp_path, capsys):
    with pytest.raises(ValueError, match="not pinned by digest"):
        dockerfile("python:3.11-slim")
    assert package_main(["--output", str(tmp_path / "ctx"), "--base-image", "python:3.11-slim"]) == 2
    assert "not pinned by digest" in capsys.readouterr().err and not (tmp_path / "ctx").exists()


def test_package_holds_only_the_use_cases_asked_for(project, tmp_path, capsys):
    """--use-case NAME or a group: only those use cases' production models (their model_name); none: every one."""
    root = project(
        {
            "one": toy_config(model_name="diabetes_model"),
            "two": toy_config(model_name="nyc_energy_model"),
            "three": toy_config(model_name=SET),
            "never": toy_config(model_name="never_trained"),
        },
        groups={"pair": ["two", "three"]},
    )
    shutil.copyfile(REPO_ROOT / "requirements.lock", root / "requirements.lock")  # a project's own lock
    register_standard_models(load_settings(), tmp_path, regions=("r0001",))

    def packaged(*args: str) -> list[str]:
        out = tmp_path / "ctx"
        assert package_main(["--output", str(out), *args]) == 0, capsys.readouterr().err
        return [m["name"] for m in json.loads((out / "package" / "manifest.json").read_text())["models"]]

    assert packaged("--use-case", "one") == ["diabetes_model"]
    assert packaged("--use-case", "pair") == ["nyc_energy_model", SET]
    assert packaged("--use-case", "one,never") == ["diabetes_model"]
    assert packaged() == ["diabetes_model", "nyc_energy_model", SET]
    capsys.readouterr()
    assert package_main(["--output", str(tmp_path / "none"), "--use-case", "never"]) == 1
    err = capsys.readouterr().err
    assert "no model in production for use case never" in err and len(err.strip().splitlines()) == 1
    assert package_main(["--output", str(tmp_path / "none"), "--use-case", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown use case 'nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_package_refuses_to_replace_a_foreign_folder(settings, tmp_path, capsys):
    register_standard_models(settings, tmp_path, regions=("r0001",))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert package_main(["--output", str(foreign)]) == 1
    assert "refusing" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_packaged_service_checks_text_and_boolean_inputs(settings, tmp_path, capsys):
    """Types and allowed values travel with the registered model into the package and the served image."""
    folder = save_single(
        shop_model(), tmp_path / "shop_model", SHOP_ROWS[:1], input_types=SHOP_TYPES, allowed=SHOP_ALLOWED
    )
    register_folder(settings, folder, "shop_model")
    out = tmp_path / "ctx"
    assert package_main(["--output", str(out)]) == 0, capsys.readouterr().err
    process, url = serve_package(out, dict(os.environ))
    try:
        good = httpx.post(f"{url}/score", json={"model_name": "shop_model", "data": SHOP_ROWS}, timeout=10)
        assert good.status_code == 200 and len(good.json()["predictions"]) == 2, good.text
        bad = httpx.post(
            f"{url}/score", json={"model_name": "shop_model", "data": [["purple", "t", True, 1.0]]}, timeout=10
        )
        assert bad.status_code == 422 and bad.json()["field"] == "data[0][0]"
        assert "'colour' must be one of [red, green, blue], got 'purple'" in bad.json()["detail"]
        flag = httpx.post(f"{url}/score", json={"model_name": "shop_model", "data": [["red", "t", 1, 1.0]]}, timeout=10)
        assert flag.status_code == 422 and "'promo' must be true or false" in flag.json()["detail"]
        code, stdout, _ = smoke(capsys, "--url", url)
        assert code == 0 and "1/1 models answered" in stdout, stdout
    finally:
        stop(process)
