"""The last stage of `make run`: serve a package on 127.0.0.1, smoke-test it, stop it."""

from __future__ import annotations

import os
import socket

import httpx
import pytest

from ml_service.scoring.package import main as package_main
from tests.conftest import run_module
from tests.test_scoring_support import (
    DIABETES_ROWS,
    free_port,
    register_standard_models,
    serve_package,
    stop,
)

pytestmark = pytest.mark.slow


def test_serves_smoke_tests_and_stops(settings, tmp_path, capsys):
    register_standard_models(settings, tmp_path)
    assert package_main(["--output", str(tmp_path / "ctx")]) == 0, capsys.readouterr().err
    port = free_port()
    result = run_module(
        "ml_service.util.serve_and_smoke_test", "--package", str(tmp_path / "ctx"), "--port", str(port), timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"http://127.0.0.1:{port}" in result.stdout
    assert "ok   diabetes_model" in result.stdout and "smoke test passed" in result.stdout
    with socket.socket() as probe:  # the service was stopped
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_missing_package_is_one_line():
    result = run_module("ml_service.util.serve_and_smoke_test", "--package", "no/such/folder")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: package folder no/such/folder not found: run 'make package' first"


def test_two_workers_serve_the_package(settings, tmp_path, capsys):
    register_standard_models(settings, tmp_path)
    assert package_main(["--output", str(tmp_path / "ctx")]) == 0, capsys.readouterr().err
    process, url = serve_package(tmp_path / "ctx", dict(os.environ), None, "--workers", "2")
    try:
        answers = [
            httpx.post(f"{url}/score", json={"model_name": "diabetes_model", "data": DIABETES_ROWS}, timeout=30).json()
            for _ in range(6)
        ]
    finally:
        stop(process)
    assert all(a["predictions"] == answers[0]["predictions"] and len(a["predictions"]) == 2 for a in answers)


def test_more_workers_need_a_package():
    result = run_module("ml_service.scoring.serve", "--workers", "2")
    assert result.returncode == 1
    assert result.stderr.strip() == "serve: --workers must be at least 1, and more than 1 needs --package"
