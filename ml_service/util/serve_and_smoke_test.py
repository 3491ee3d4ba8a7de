"""Start the scoring service from a package on 127.0.0.1, smoke-test it, print the summary and stop it.

The last stage of `make run`: the same smoke test the deployment pipelines run against ACI, AKS or App
Service, here against a real local server. `make serve` keeps the service running instead.

The server's own output (one JSON access-log line per request) goes to a log file, not into the summary. The
smoke test runs only once ``/health`` answers with the instance id this launcher gave its server: another
service already on the port is never mistaken for it, and a server that fails to start (port taken) fails the
run with its own error.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx

from ml_service.util import smoke_test_scoring_service
from ml_service.util.env_variables import SettingsError, load_settings

NEXT_STEPS = (
    "next: make serve (every production model on http://127.0.0.1:{port}, docs at /docs), "
    "make ui (the MLflow registry at http://127.0.0.1:5000), "
    "make traffic then make monitor (drift and decay per model)"
)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_own_server(url: str, instance: str, server: subprocess.Popen, headers: dict, timeout: float) -> str | None:
    """None once ``url`` answers as the server with ``instance``; else why not (exited, another server, timeout)."""
    deadline = time.monotonic() + timeout
    other = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"the service exited with code {server.returncode} before answering"
        try:
            body = httpx.get(f"{url}/health", headers=headers, timeout=2).json()
            if body.get("instance") == instance:
                return None
            other = f"another server answers on {url} (its /health is not this run's service)"
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        time.sleep(0.2)
    return other or f"the service did not answer on {url} within {timeout:.0f} s"


def start_service(
    package: Path, port: int, log_path: Path, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen, str, str]:
    """`ml_service.scoring.serve` from `package` on 127.0.0.1:`port` (with `env` added), its output in `log_path`,
    under a new instance id, so `wait_own_server` can tell it from another server on the port:
    (process, url, instance id)."""
    instance = uuid.uuid4().hex
    command = [sys.executable, "-m", "ml_service.scoring.serve", "--package", str(package), "--port", str(port)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command,
            env={**os.environ, **(env or {}), "SCORING_INSTANCE_ID": instance},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return server, f"http://127.0.0.1:{port}", instance


def stop_service(server: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (the service finishes what it is answering and flushes what it collected), SIGKILL after `timeout`."""
    server.terminate()
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="package folder (ml_service.scoring.package)")
    parser.add_argument("--port", type=int, help="port (default: SCORING_PORT if free, else any free port)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the service to be ready")
    parser.add_argument("--log", type=Path, help="the service's log file (default: <LOCAL_DIR>/logs/serve-smoke.log)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.package.is_dir():
        print(f"error: package folder {args.package} not found: run 'make package' first", file=sys.stderr)
        return 2
    port = args.port or (settings.scoring_port if port_is_free(settings.scoring_port) else free_port())
    log_path = args.log or settings.local_path / "logs" / "serve-smoke.log"
    headers = {"Authorization": f"Bearer {settings.scoring_api_key}"} if settings.scoring_api_key else {}
    server, url, instance = start_service(args.package, port, log_path)
    print(f"serve_and_smoke_test: starting the service on {url} (its log: {log_path})", flush=True)
    try:
        problem = wait_own_server(url, instance, server, headers, args.timeout)
        if problem:
            print(f"serve_and_smoke_test: {problem}; last lines of {log_path}:\n{tail(log_path)}", file=sys.stderr)
            code = 1
        else:
            smoke_args = ["--url", url, "--timeout", str(args.timeout)]
            if settings.scoring_api_key:
                smoke_args += ["--key", settings.scoring_api_key]
            code = smoke_test_scoring_service.main(smoke_args)
    finally:
        stop_service(server)
    print(f"serve_and_smoke_test: service stopped; smoke test {'passed' if code == 0 else 'FAILED'}")
    if code == 0:
        print(NEXT_STEPS.format(port=settings.scoring_port))
    return code


if __name__ == "__main__":
    sys.exit(main())
