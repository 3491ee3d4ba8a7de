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


def test_another_server_on_the_port_is_not_mistaken_for_ours(tmp_path):
    import http.server
    import threading

    from tests.test_scoring_support import diabetes_model, save_single, write_package

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b'{"live": true, "ready": true, "models": 1}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    root = write_package(
        tmp_path / "ctx",
        {"diabetes_model": save_single(diabetes_model(), tmp_path / "diabetes_model", DIABETES_ROWS[:1])},
    )
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        port = other.server_address[1]
        result = run_module(
            "ml_service.util.serve_and_smoke_test", "--package", str(root), "--port", str(port), "--timeout", "60"
        )
    finally:
        other.shutdown()
    assert result.returncode == 1 and "smoke test passed" not in result.stdout
    assert "address already in use" in result.stderr.lower() or "exited" in result.stderr


def test_summary_has_no_access_log_lines_and_says_what_next(tmp_path):
    from tests.test_scoring_support import diabetes_model, save_single, write_package

    root = write_package(
        tmp_path / "ctx",
        {"diabetes_model": save_single(diabetes_model(), tmp_path / "diabetes_model", DIABETES_ROWS[:1])},
    )
    result = run_module("ml_service.util.serve_and_smoke_test", "--package", str(root), "--port", str(free_port()))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert '"request_id"' not in result.stdout  # the service's JSON log lines went to its log file
    assert "next: make serve" in result.stdout and "make ui" in result.stdout
