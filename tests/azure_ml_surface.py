"""A real MLflow tracking server (the locked mlflow version, from the project's own environment) behind a small
HTTP proxy that answers as Azure ML's MLflow surface is documented to ("Manage models registry in Azure Machine
Learning with MLflow", table "Review supported capabilities"):

* aliases are not offered: every ``/registered-models/alias`` call is a 404 ``ENDPOINT_NOT_FOUND``;
* only MLflow-format models register: creating a version whose source folder has no ``MLmodel`` file is refused;
* no search by tag: a version or model search whose filter names ``tags.`` is refused;
* MLflow 3's logged-model endpoints are refused too (404s reported for them on Azure ML:
  Azure/azure-sdk-for-python#44896), so nothing here may depend on them.

Everything else is forwarded unchanged. This replaces only Azure's network edge; the store behind it is real.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path, template_db: Path | None = None, timeout_s: float = 120) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store and local artifacts in `folder`; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "server.db"
    if template_db is not None:  # an already-migrated schema: the server starts seconds sooner
        db.write_bytes(template_db.read_bytes())
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{db}", "--default-artifact-root", str(folder / "artifacts"),
    ]  # fmt: skip
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below, after the server stops
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _refusal(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


def _local_folder(source: str) -> Path | None:
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("", "file"):
        return Path(urllib.parse.unquote(parsed.path))
    return None


def azure_answer(method: str, path: str, body: bytes) -> tuple[int, bytes] | None:
    """Azure ML's answer where it differs from MLflow's, or None to forward the request."""
    route, _, query = path.partition("?")
    if "/registered-models/alias" in route:
        return _refusal(404, "ENDPOINT_NOT_FOUND", f"{method} {route}: aliases are not supported")
    if "/logged-models" in route:
        return _refusal(404, "ENDPOINT_NOT_FOUND", f"{method} {route} is not found")
    if route.endswith(("/model-versions/search", "/registered-models/search")):
        text = urllib.parse.parse_qs(query).get("filter", [""])[0]
        if method == "POST" and body:
            text = json.loads(body).get("filter", "") or text
        if "tags." in text or "tag." in text:
            return _refusal(400, "INVALID_PARAMETER_VALUE", f"search by tag is not supported (filter {text!r})")
    if route.endswith("/model-versions/create") and method == "POST":
        source = json.loads(body).get("source", "")
        folder = _local_folder(source)
        if folder is None or not (folder / "MLmodel").is_file():
            return _refusal(
                400, "INVALID_PARAMETER_VALUE", f"{source} is not an MLflow model (no MLmodel file): not registered"
            )
    return None


@contextmanager
def azure_ml_proxy(upstream: str) -> Iterator[tuple[str, list[str]]]:
    """A proxy on 127.0.0.1 in front of `upstream`; yields its URL and the log of 'METHOD path -> status'."""
    target = urllib.parse.urlparse(upstream)
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            answer = azure_answer(self.command, self.path, body)
            if answer is None:
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                status, payload = response.status, response.read()
                content_type = response.getheader("Content-Type", "application/json")
            else:
                (status, payload), content_type = answer, "application/json"
            calls.append(f"{self.command} {self.path.partition('?')[0]} -> {status}")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()
