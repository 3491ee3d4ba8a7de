"""Start the scoring service from a package on 127.0.0.1, smoke-test it, print the summary and stop it.

The last stage of `make run`: the same smoke test the deployment pipelines run against ACI, AKS or App
Service, here against a real local server. `make serve` keeps the service running instead.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

from ml_service.util import smoke_test_scoring_service
from ml_service.util.env_variables import SettingsError, load_settings


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True, help="package folder (ml_service.scoring.package)")
    parser.add_argument("--port", type=int, help="port (default: SCORING_PORT if free, else any free port)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the service to be ready")
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
    command = [sys.executable, "-m", "ml_service.scoring.serve", "--package", str(args.package), "--port", str(port)]
    print(f"serve_and_smoke_test: starting the service on http://127.0.0.1:{port}", flush=True)
    server = subprocess.Popen(command, env=os.environ.copy())
    try:
        smoke_args = ["--url", f"http://127.0.0.1:{port}", "--timeout", str(args.timeout)]
        if settings.scoring_api_key:
            smoke_args += ["--key", settings.scoring_api_key]
        code = smoke_test_scoring_service.main(smoke_args)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(f"serve_and_smoke_test: service stopped; smoke test {'passed' if code == 0 else 'FAILED'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
