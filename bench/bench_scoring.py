"""Benchmark single-row POST /score for every model kind the samples serve, side by side in one run.

    .venv/bin/python bench/bench_scoring.py [--package local/package] [--seconds 6] [--connections 32]
        [--models name,name] [--servers 1,2,azml]

Needs wrk (``apt-get install -y wrk``) and the package ``make run`` (or ``make package``) writes. For each model
kind (the diabetes Ridge on the NumPy path, the FLAML diabetes pipeline, the energy model FLAML chose, one ridge
partition model) it measures, loopback only, each server warmed up for 2 s first (and, with several workers,
once every worker listens):

- this service (``ml_service.scoring.serve --package``) with 1 and with 2 workers;
- azureml-inference-server-http (one gunicorn worker, its default) running the project's entry script
  ``ml_service/scoring/azureml_score.py`` on the same package;
- the in-process ceiling: CPU time of one ``predict`` call of 1 row and of 32 rows, the model's own ``predict``
  and the path the service calls (its exact fast path, when it has one), interleaved.

Wall-clock rates on a shared 2-core host swing with the other tenants, so it also reports what is robust to
them: the CPU time the server's processes and wrk spent per request, the CPU time per ``predict`` call and the
requests each call answered (from every worker's ``/metrics``), the cores the server and wrk used and the cores
other processes took during the run (``/proc/stat``), and the ceiling that cost per request sets on 2 free cores:
2 / (server + wrk CPU per request), or 1 / (server CPU per request) for one process (one GIL). (With the host
saturated, rate = our cores / our CPU per request: the rate is then the share of the CPU the others leave.)

It also checks, on the packaged models, that the service's answers under concurrent load equal unbatched
``predict`` row by row. Not part of the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from ml_service.scoring.batching import predict, to_json_values  # noqa: E402
from ml_service.scoring.inputs import checked_rows_to_input  # noqa: E402
from ml_service.scoring.model_store import ModelStore  # noqa: E402

MODELS = {
    "diabetes_regression_model": "Ridge, NumPy path",
    "diabetes_model": "FLAML pipeline",
    "nyc_energy_model": "FLAML pipeline",  # FLAML's choice varies from run to run: the estimator is printed
    "nyc_energy_regions_model/region=r0001": "ridge partition pipeline",
}
SERVICE_1, SERVICE_2, AZML = "service, 1 worker", "service, 2 workers", "azmlinfsrv + azureml_score.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = 'wrk.method = "POST"\nwrk.body = {body}\nwrk.headers["Content-Type"] = "application/json"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text.removesuffix(unit)) * factor
    raise ValueError(text)


def host_busy_seconds() -> float:
    """CPU seconds every process of the machine has used since boot (all cores; /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS  # all but idle and iowait


def tree_cpu(process: subprocess.Popen) -> float:
    """CPU seconds of a server: its process and every process below it."""
    total = 0.0
    try:
        root = psutil.Process(process.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def wait_listening(process: subprocess.Popen, port: int, workers: int, timeout: float = 120.0) -> None:
    """Wait until ``workers`` processes of the server listen on ``port`` (one answering /health is not enough: the
    connections wrk opens while a worker is still starting all go to the others)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = 0
        for proc in psutil.Process(process.pid).children(recursive=True):
            try:
                listening += any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.connections())
            except psutil.Error:
                pass
        if listening >= workers:
            return
        time.sleep(0.3)
    raise TimeoutError(f"{workers} workers not listening on {port} after {timeout} s")


def batch_stats(url: str, workers: int) -> dict[str, float]:
    """The batch metrics of every worker, summed: each answers /metrics for itself, so ask on new connections until
    ``workers`` different answers came (the counters do not move between the calls: no load is running)."""
    seen: set[tuple[str, ...]] = set()
    for _ in range(40 if workers > 1 else 1):
        text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
        seen.add(tuple(line for line in text.splitlines() if line.startswith("scoring_batch_")))
        if len(seen) >= workers:
            break
    totals: dict[str, float] = {}
    for lines in seen:
        for line in lines:
            key, value = line.rsplit(" ", 1)
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def wrk(url: str, body: dict, connections: int, seconds: float, server: subprocess.Popen, metrics: int = 0) -> dict:
    """wrk's numbers, plus CPU per request of the server and of wrk, the cores other processes took meanwhile, and
    (``metrics``: the number of workers) the batches of the run from /metrics."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(json.dumps(body))))
    try:
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", "-s", script.name, url], capture_output=True)
        base = url.rsplit("/", 1)[0]
        before = batch_stats(base, metrics) if metrics else {}
        children, server_cpu, busy = resource.getrusage(resource.RUSAGE_CHILDREN), tree_cpu(server), host_busy_seconds()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
        after_children, server_cpu, busy = (
            resource.getrusage(resource.RUSAGE_CHILDREN),
            tree_cpu(server) - server_cpu,
            host_busy_seconds() - busy,
        )
        after = batch_stats(base, metrics) if metrics else {}
    finally:
        os.unlink(script.name)
    fields: dict = {"non2xx": 0, "errors": ""}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")):
            fields[parts[0]] = _ms(parts[1])
        elif line.startswith("Requests/sec:"):
            fields["rps"] = float(parts[1])
        elif re.match(r"\s*\d+ requests in", line):
            fields["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            fields["non2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            fields["errors"] = line.strip()
    requests = max(fields.get("requests", 0), 1)
    wrk_cpu = (after_children.ru_utime + after_children.ru_stime) - (children.ru_utime + children.ru_stime)
    fields["server_ms"] = server_cpu / requests * 1000
    fields["wrk_ms"] = wrk_cpu / requests * 1000
    fields["others_cores"] = max(busy - server_cpu - wrk_cpu, 0.0) / seconds
    calls = after.get("scoring_batch_requests_count", 0) - before.get("scoring_batch_requests_count", 0)
    if calls:
        answered = after["scoring_batch_requests_sum"] - before.get("scoring_batch_requests_sum", 0)
        cpu = after.get("scoring_batch_cpu_seconds_total", 0) - before.get("scoring_batch_cpu_seconds_total", 0)
        fields.update(
            calls=calls, per_call=answered / calls, call_ms=cpu / calls * 1000, predict_ms=cpu / requests * 1000
        )
    return fields


def ceiling(store: ModelStore, name: str, row: list, rounds: int = 5, calls: int = 20) -> dict[str, float]:
    """CPU ms per predict call (this thread) of 1 row and of 32 rows: the model's own predict ("own") and the path
    the service calls ("served": its exact fast path, when it has one), interleaved; medians of ``rounds``."""
    loaded = store.get(name)
    own = dataclasses.replace(loaded, fast=None)
    out: dict[str, list[float]] = {}
    for rows in (1, 32):
        features = checked_rows_to_input(loaded.schema, [row] * rows, loaded.array_input)
        for _ in range(rounds):
            for label, model in (("own", own), ("served", loaded)):
                started = time.thread_time()
                for _ in range(calls):
                    predict(model, features)
                out.setdefault(f"{label} {rows}", []).append((time.thread_time() - started) / calls * 1000)
    return {key: statistics.median(values) for key, values in out.items()}


def describe(store: ModelStore, name: str) -> str:
    model = store.get(name).model
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    size = getattr(final, "n_estimators", None)
    return f"{MODELS[name]}: {type(final).__name__}" + (f", {size} trees" if size else "")


def check_equality(url: str, store: ModelStore, names: list[str]) -> str:
    """Concurrent callers, mixed request sizes of the model's sample rows: each answer must equal the model's own
    unbatched predict (never its fast path): row by row when the model is batched across requests, request by
    request otherwise."""
    bad = []
    with ThreadPoolExecutor(16) as pool:
        for name in names:
            loaded = store.get(name)
            own = dataclasses.replace(loaded, fast=None)
            sample = store.entry(name).metadata()["sample_input"]
            requests = [[sample[(i + k) % len(sample)] for k in range(1 + i % 5)] for i in range(64)]
            answers = list(
                pool.map(
                    lambda r, name=name: httpx.post(
                        f"{url}/score", json={"model_name": name, "data": r}, timeout=30
                    ).json()["predictions"],
                    requests,
                )
            )
            for part, answer in zip(requests, answers, strict=True):
                if loaded.batch_invariant:
                    expected = [
                        to_json_values(predict(own, checked_rows_to_input(own.schema, [row], own.array_input)))[0]
                        for row in part
                    ]
                else:
                    expected = to_json_values(predict(own, checked_rows_to_input(own.schema, part, own.array_input)))
                if answer != expected:
                    bad.append(name)
                    break
    kinds = ", ".join(
        f"{n}: {'batched' if store.get(n).batch_invariant else 'per request'}"
        + (", fast path" if store.get(n).fast else "")
        for n in names
    )
    return (
        "equal to the model's own unbatched predict for every model" if not bad else f"DIFFERENT for {sorted(set(bad))}"
    ) + f" ({kinds})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, default=ROOT / "local" / "package")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of the models")
    parser.add_argument("--servers", default="1,2,azml", help="comma-separated subset of 1, 2 (workers), azml")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_scoring: wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    try:
        store = ModelStore.from_package(args.package, 64)
    except Exception as exc:  # noqa: BLE001 - one line naming the fix
        print(f"bench_scoring: {exc}: run make package first", file=sys.stderr)
        return 2
    wanted = [name for name in args.models.split(",") if name in MODELS and name in store]
    rows = {name: store.entry(name).metadata()["sample_input"][:1] for name in wanted}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCORING_API_KEY": "", "APPLICATIONINSIGHTS_CONNECTION_STRING": ""}
    service = ["-m", "ml_service.scoring.serve", "--package", str(args.package)]
    every = {
        SERVICE_1: (1, [*service, "--workers", "1"]),
        SERVICE_2: (2, [*service, "--workers", "2"]),
        AZML: (
            0,
            [
                "-m",
                "ml_service.scoring.inference_server",
                "--entry_script",
                str(ROOT / "ml_service" / "scoring" / "azureml_score.py"),
            ],
        ),
    }
    chosen = {"1": SERVICE_1, "2": SERVICE_2, "azml": AZML}
    servers = {chosen[key]: every[chosen[key]] for key in args.servers.split(",") if key in chosen}
    results: dict[tuple[str, str], dict] = {}
    equality = ""
    for label, (workers, argv) in servers.items():
        port = free_port()
        extra = {"AZUREML_MODEL_DIR": str(args.package.resolve())} if label == AZML else {}
        process = subprocess.Popen(
            [sys.executable, *argv, "--port", str(port)],
            cwd=ROOT,
            env={**env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url + "/", process)
            if workers > 1:
                wait_listening(process, port, workers)
            if label == SERVICE_2:
                equality = check_equality(url, store, list(rows))
            for name, row in rows.items():
                body = {"model_name": name, "data": row}
                results[(label, name)] = wrk(f"{url}/score", body, args.connections, args.seconds, process, workers)
        finally:
            process.terminate()
            process.wait(timeout=30)
    ceilings = {name: ceiling(store, name, row[0]) for name, row in rows.items()}
    print(
        f"single-row POST /score, wrk -t1 -c{args.connections} -d{int(args.seconds)}s, loopback, {os.cpu_count()} cores"
    )
    print(f"| model | {' | '.join(servers)} | 2 workers / azmlinfsrv | in-process predict, 1 row / 32 rows |")
    print("| --- |" + " --- |" * (len(servers) + 2))
    for name in rows:
        cells = []
        for label in servers:
            r = results[(label, name)]
            cell = f"{r.get('rps', 0):,.0f} req/s, p50 {r.get('50%', 0):.1f} ms, p99 {r.get('99%', 0):.1f} ms"
            if r["non2xx"] or r["errors"]:
                cell += f" ({r['non2xx']} non-2xx {r['errors']})"
            cells.append(cell)
        ratio = "—"
        if SERVICE_2 in servers and AZML in servers:
            ratio = f"{results[(SERVICE_2, name)].get('rps', 0) / max(results[(AZML, name)].get('rps', 0), 1):.1f}x"
        c = ceilings[name]
        print(
            f"| `{name}` ({describe(store, name)}) | {' | '.join(cells)} | {ratio} | "
            f"{c['served 1']:.2f} ms / {c['served 32']:.2f} ms |"
        )
    print(f"batching check under load: {equality or 'not run (needs the 2-worker service)'}")
    print()
    print("Where the CPU goes (CPU ms per request; the host's other processes in cores, during each run):")
    print(
        "| model | server | server CPU / request | of which predict | requests per predict call | "
        "CPU per predict call | wrk CPU / request | cores: ours / others | ceiling on 2 free cores | predict per "
        "call, own / served path (1 row; 32 rows) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in rows:
        c = ceilings[name]
        served = f"{c['own 1']:.2f} / {c['served 1']:.2f} ms; {c['own 32']:.2f} / {c['served 32']:.2f} ms"
        for label in servers:
            r = results[(label, name)]
            per_request = (r["server_ms"] + r["wrk_ms"]) / 1000
            ours = r.get("rps", 0) * per_request
            # one process uses one core at most (its Python threads share one GIL): 1 worker, azmlinfsrv's 1
            processes = min(servers[label][0] or 1, os.cpu_count())
            ceiling_rate = min(processes / (r["server_ms"] / 1000), os.cpu_count() / per_request)
            predict_cells = (
                f"{r['predict_ms']:.3f} ms | {r['per_call']:.1f} | {r['call_ms']:.2f} ms"
                if "calls" in r
                else "— | — | —"
            )
            print(
                f"| `{name}` | {label} | {r['server_ms']:.3f} ms | {predict_cells} | {r['wrk_ms']:.3f} ms | "
                f"{ours:.2f} / {r['others_cores']:.2f} | {ceiling_rate:,.0f} req/s | {served} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
