"""Benchmark single-row /score at 32 concurrent connections, loopback only, bounded in requests and time.

    .venv/bin/python bench/bench_scoring.py [--requests 4000] [--seconds 20] [--connections 32]

Measures, in one run on this machine: (a) this service (``ml_service.scoring.serve``, one uvicorn worker) and
(b) the same diabetes model behind ``diabetes_regression/scoring/score.py`` under azureml-inference-server-http
(gunicorn, one worker, started on 127.0.0.1 by ``ml_service.scoring.inference_server``), plus the in-process
ceiling: ``model.predict`` on a one-row DataFrame, and the service's own validation + predict path.
The load generator is a minimal asyncio HTTP/1.1 keep-alive client (httpx's own overhead would dominate
on 2 cores). It shares the cores with the server, so absolute numbers are pessimistic; compare ratios.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402

from ml_service.registry.model_folder import save_model_folder  # noqa: E402
from ml_service.scoring.inputs import rows_to_array, schema_from_metadata  # noqa: E402

COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
ROW = [56, 2, 33.1, 88, 200, 143, 36, 5, 4.8, 98]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_model(folder: Path) -> Ridge:
    data = load_diabetes(scaled=False, as_frame=True).frame
    x = data.drop(columns=["target"])
    x.columns = COLUMNS
    model = Ridge(alpha=0.5).fit(x, data["target"])
    # as the train step writes it: input columns and two sample rows
    metadata = {"model_name": "diabetes_model", "input_columns": COLUMNS, "sample_input": x.head(2).to_numpy().tolist()}
    save_model_folder(model, folder, metadata)
    return model


def write_package(root: Path) -> Path:
    package = root / "package"
    build_model(package / "models" / "diabetes_model")
    manifest = {
        "kind": "scoring_package",
        "format": 1,
        "models": [{"name": "diabetes_model", "version": "1", "path": "models/diabetes_model", "kind": "model"}],
    }
    (package / "manifest.json").write_text(json.dumps(manifest))
    return package


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"port {port} not open after {timeout} s")


async def one_connection(port: int, request: bytes, counter: list[int], latencies: list[float], deadline: float):
    reader = writer = None
    try:
        while counter[0] > 0 and time.perf_counter() < deadline:
            counter[0] -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def load(port: int, path: str, body: bytes, requests: int, connections: int, seconds: float) -> dict:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    warm: list[float] = []
    await asyncio.gather(*(one_connection(port, request, [20], warm, time.perf_counter() + 10) for _ in range(4)))
    latencies: list[float] = []
    counter = [requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(one_connection(port, request, counter, latencies, deadline) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk_ms(text: str) -> float:
    """wrk prints latencies as 456.00us, 1.23ms or 1.02s."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    raise ValueError(f"wrk latency {text!r}")


def load_wrk(port: int, path: str, body: bytes, connections: int, seconds: float) -> dict:
    """The same load from wrk (a C load generator, lighter than Python), when it is installed."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.replace('os.getenv("BENCH_BODY")', json.dumps(body.decode())))
    url = f"http://127.0.0.1:{port}{path}"
    # warm-up: connections opened, model loaded, caches hot; only the second run is measured
    subprocess.run(["wrk", "-t2", f"-c{connections}", "-d2s", "-s", script.name, url], capture_output=True, timeout=60)
    command = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency", "-s", script.name]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 30
    )
    os.unlink(script.name)
    fields = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")):
            fields[parts[0]] = _wrk_ms(parts[1])
        elif line.startswith("Requests/sec:"):
            fields["rps"] = float(parts[1])
        elif "requests in" in line:
            fields["requests"] = int(parts[0])
        elif line.startswith("Non-2xx"):
            raise RuntimeError(f"wrk: {line.strip()}")
    return {"requests": fields["requests"], "rps": fields["rps"], "p50_ms": fields["50%"], "p99_ms": fields["99%"]}


def in_process(model: Ridge, seconds: float = 2.0) -> dict[str, float]:
    """Calls per second in one process: the ceiling of one worker, for each way of feeding the model."""
    frame = pd.DataFrame([ROW], columns=COLUMNS, dtype=float)
    schema = schema_from_metadata({"input_columns": COLUMNS})
    ways = {
        "model.predict(DataFrame)": lambda: model.predict(frame),
        "model.predict(array) (the service's path here)": lambda: model.predict(rows_to_array(schema, [ROW])),
    }
    rates = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for label, work in ways.items():
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                work()
                calls += 1
            rates[label] = calls / (time.perf_counter() - started)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--client", choices=("auto", "python", "wrk"), default="auto", help="load generator (auto: wrk when installed)"
    )
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORING_API_KEY": "", "APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        package = write_package(Path(tmp))
        model_dir = package / "models" / "diabetes_model"
        servers = {
            "service (FastAPI, 1 worker)": (
                ["-m", "ml_service.scoring.serve", "--package", str(package)],
                {},
                "/score",
                {"model_name": "diabetes_model", "data": [ROW]},
            ),
            "service (FastAPI, 2 workers)": (
                ["-m", "ml_service.scoring.serve", "--package", str(package), "--workers", "2"],
                {},
                "/score",
                {"model_name": "diabetes_model", "data": [ROW]},
            ),
            "azmlinfsrv (score.py, 1 worker)": (
                [
                    "-m",
                    "ml_service.scoring.inference_server",
                    "--entry_script",
                    str(ROOT / "diabetes_regression" / "scoring" / "score.py"),
                ],
                {"AZUREML_MODEL_DIR": str(model_dir)},
                "/score",
                {"data": [ROW]},
            ),
        }
        for label, (argv, extra_env, path, payload) in servers.items():
            port = free_port()
            process = start([*argv, "--port", str(port)], {**env, **extra_env})
            try:
                wait_port(port, process)
                body = json.dumps(payload).encode()
                if use_wrk:
                    results[label] = load_wrk(port, path, body, args.connections, args.seconds)
                else:
                    results[label] = asyncio.run(load(port, path, body, args.requests, args.connections, args.seconds))
            finally:
                process.terminate()
                process.wait(timeout=15)
        ceilings = in_process(build_model(Path(tmp) / "ceiling"))
    client = "wrk" if use_wrk else "Python asyncio client"
    print(f"single-row /score, {args.connections} connections, loopback, {os.cpu_count()} cores, load from {client}")
    for label, r in results.items():
        print(
            f"  {label:34s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms"
            f"  ({r['requests']} requests)"
        )
    for label, rate in ceilings.items():
        print(f"  in-process {label}: {rate:.0f} calls/s")
    predict_rate = max(ceilings.values())
    theirs = results["azmlinfsrv (score.py, 1 worker)"]
    for label in ("service (FastAPI, 1 worker)", "service (FastAPI, 2 workers)"):
        ours = results[label]
        print(
            f"{label}: {ours['rps'] / theirs['rps']:.2f}x azmlinfsrv (target >= 2x); "
            f"p99 {ours['p99_ms']:.1f} ms (target < 20 ms); {ours['rps'] / predict_rate:.2f} of one process's ceiling"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
