"""The scoring service probed as an attacker or an unlucky operator would: real servers on 127.0.0.1, real processes.

Each test reproduces one finding: predictions that blocked the event loop (and /health), workers outliving a
killed parent, a broken or swapped model file retried with a traceback each time, a crafted pickle executed,
unbounded nesting, names, headers and slow connections.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ml_service.registry.model_set import MODEL_FILE
from tests.test_scoring_support import (
    DIABETES_ROWS,
    REPO_ROOT,
    GateModel,
    diabetes_model,
    save_single,
    serve_test_package,
    stop,
    write_package,
)

pytestmark = pytest.mark.slow


def test_health_answers_while_a_prediction_runs(tmp_path):
    # no sample input: the store's load-time probes never call its predict; the folder is not tmp_path/gate (that
    # file is what releases the prediction)
    model = GateModel(str(tmp_path))
    gate = save_single(model, tmp_path / "gate-model", name="gate", input_types={"x": "number"})
    root = write_package(tmp_path / "ctx", {"gate": gate, "d": save_single(diabetes_model(), tmp_path / "d")})
    process, url = serve_test_package(root, dict(os.environ), "--workers", "1")
    try:
        answer: list = []
        scoring = threading.Thread(
            target=lambda: answer.append(
                httpx.post(f"{url}/score", json={"model_name": "gate", "data": [[1]]}, timeout=90)
            )
        )
        scoring.start()
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (tmp_path / "started").exists()
        health = httpx.get(f"{url}/health", timeout=30)  # the prediction is still running: it blocks no one
        other = httpx.post(f"{url}/score", json={"model_name": "d", "data": DIABETES_ROWS}, timeout=30)
        assert scoring.is_alive() and not answer
        assert health.status_code == 200 and other.status_code == 200
        (tmp_path / "gate").touch()
        scoring.join(60)
        assert answer[0].status_code == 200 and answer[0].json()["predictions"] == [0.0]
    finally:
        stop(process)


def test_workers_die_with_a_killed_parent_and_the_port_is_free_again(tmp_path):
    root = write_package(tmp_path / "ctx", {"d": save_single(diabetes_model(), tmp_path / "d")})
    process, url = serve_test_package(root, dict(os.environ), "--workers", "2")
    port = int(url.rsplit(":", 1)[1])
    try:
        deadline = time.monotonic() + 30
        workers = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = [c for c in psutil.Process(process.pid).children() if "python" in c.name()]
            time.sleep(0.2)
        assert len(workers) >= 2
        process.kill()  # kill -9 of the master
        process.wait(10)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == []
        with socket.socket() as again:  # a restart can bind the port
            again.bind(("127.0.0.1", port))
    finally:
        stop(process)


def test_each_worker_listens_on_its_own_socket_so_connections_spread_over_both(tmp_path):
    # with one shared socket, whichever worker woke first accepted a whole burst: 32 connections split 32/0, 31/1
    root = write_package(tmp_path / "ctx", {"d": save_single(diabetes_model(), tmp_path / "d")})
    process, url = serve_test_package(root, dict(os.environ), "--workers", "2")
    port = int(url.rsplit(":", 1)[1])

    def on_port(proc: psutil.Process, status: str) -> int:
        return sum(1 for c in proc.connections("tcp") if c.status == status and c.laddr.port == port)

    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = [c for c in psutil.Process(process.pid).children() if on_port(c, psutil.CONN_LISTEN)]
            time.sleep(0.2)
        assert [on_port(w, psutil.CONN_LISTEN) for w in workers] == [1, 1]
        assert on_port(psutil.Process(process.pid), psutil.CONN_LISTEN) == 0  # a dead worker's socket closes
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = [on_port(w, psutil.CONN_ESTABLISHED) for w in workers]
            if sum(counts) == 32:
                break
            time.sleep(0.1)
        # spread by a hash of the client port: fewer than 4 on either worker has a probability of ~3e-6
        assert sum(counts) == 32 and min(counts) >= 4, counts
        assert httpx.post(f"{url}/score", json={"model_name": "d", "data": DIABETES_ROWS}).status_code == 200
    finally:
        for client in clients:
            client.close()
        stop(process)


def test_a_second_service_on_a_port_in_use_is_refused_with_one_line(tmp_path):
    # SO_REUSEPORT would let a second service's workers share the first one's port: it is checked first
    root = write_package(tmp_path / "ctx", {"d": save_single(diabetes_model(), tmp_path / "d")})
    process, url = serve_test_package(root, dict(os.environ), "--workers", "2")
    port = url.rsplit(":", 1)[1]
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "ml_service.scoring.serve",
                "--package",
                str(root),
                "--workers",
                "2",
                "--port",
                port,
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
        assert httpx.get(f"{url}/health").status_code == 200  # the first one still serves
    finally:
        stop(process)


def test_broken_missing_and_swapped_model_files_are_refused_once_and_listed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folders = {name: save_single(diabetes_model(), tmp_path / name) for name in ("ok", "truncated", "gone", "swapped")}
    root = write_package(tmp_path / "ctx", folders)
    models = root / "package" / "models"

    def pickled(name: str) -> Path:  # the single model's file in the registered MLflow folder
        (path,) = (models / name).rglob(MODEL_FILE)
        return path

    data = pickled("truncated").read_bytes()
    pickled("truncated").write_bytes(data[: len(data) // 2])
    pickled("swapped").write_bytes(pickle.dumps(Exploit()))
    process, url = serve_test_package(root, dict(os.environ), "--workers", "1")
    try:
        pickled("gone").unlink()  # deleted while the service runs (its catalogue files at start-up: refused)
        for name, why in (("truncated", "sha256"), ("swapped", "sha256"), ("gone", "missing")):
            for _ in range(3):
                response = httpx.post(f"{url}/score", json={"model_name": name, "data": DIABETES_ROWS}, timeout=30)
                assert response.status_code == 503 and why in response.json()["detail"], response.text
        assert not marker.exists()  # the crafted pickle was never unpickled
        assert (
            httpx.post(f"{url}/score", json={"model_name": "ok", "data": DIABETES_ROWS}, timeout=30).status_code == 200
        )
        health = httpx.get(f"{url}/health", timeout=10).json()
        assert health["ready"] and health["unavailable"] == 3 and health["status"].startswith("degraded")
        listed = {m["name"]: m.get("unavailable") for m in httpx.get(f"{url}/models", timeout=10).json()}
        assert listed["ok"] is None and "sha256" in listed["swapped"] and "missing" in listed["gone"]
    finally:
        log = stop(process)
    assert log.count("Traceback") == 3  # one per broken model, not one per request


def raw_request(url: str, data: bytes, timeout: float = 20) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_nesting_names_headers_and_slow_or_idle_connections_are_bounded(tmp_path):
    root = write_package(tmp_path / "ctx", {"d": save_single(diabetes_model(), tmp_path / "d")})
    env = {**os.environ, "SCORING_READ_TIMEOUT": "1", "SCORING_MAX_CONNECTIONS": "8"}
    process, url = serve_test_package(root, env, "--workers", "1")
    try:
        nested = b'{"model_name": "d", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        response = httpx.post(f"{url}/score", content=nested, headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == 400 and "nested too deeply" in response.json()["detail"]
        long_name = "x" * 900_000
        response = httpx.post(f"{url}/score", json={"model_name": long_name, "data": DIABETES_ROWS}, timeout=30)
        assert response.status_code == 422 and len(response.content) < 1000
        huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
        assert raw_request(url, huge).startswith(b"HTTP/1.1 431")
        # slowloris: a request that never completes, and a connection that never sends, are both closed
        host, port = url.removeprefix("http://").split(":")
        slow, idle = socket.create_connection((host, int(port))), socket.create_connection((host, int(port)))
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(20)
        idle.settimeout(20)
        assert slow.recv(1024) == b"" and idle.recv(1024) == b""  # closed by the server, not by the 20 s timeout
        slow.close()
        idle.close()
        held = [socket.create_connection((host, int(port))) for _ in range(9)]  # over SCORING_MAX_CONNECTIONS
        try:
            assert httpx.get(f"{url}/health", timeout=10).status_code == 503
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 20
        while httpx.get(f"{url}/health", timeout=10).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    finally:
        log = stop(process)
    assert long_name[:1000] not in log  # the name is neither echoed nor logged whole
