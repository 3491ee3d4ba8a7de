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
``predict`` row by row, and measures what inference data collection costs: one model (``--collect-model``,
default the first of the table: the cheapest, where collection weighs most) served by 1 worker with collection off
and at rate 1 (every request written to a temporary folder), alternated 5 times; it prints the median of the rounds'
throughput ratios, the records collected and dropped (``/metrics``), and collection's CPU per request measured in
this process (thread CPU time: what a busy host's noise does not move); and the app itself through ASGI in this
process, off and on in 30 alternating windows (CPU and wall time per request: on a busy shared host, the numbers
least moved by other processes). ``--collection-only`` runs just that.
Not part of the tests.
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
FLUSH_WAIT = 0.5  # seconds: longer than the collector's flush interval
SERVICE_1, SERVICE_2, AZML = "service, 1 worker", "service, 2 workers", "azmlinfsrv + azureml_score.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = 'wrk.method = "POST"\nwrk.body = {body}\nwrk.headers["Content-Type"] = "application/json"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(argv: list[str], env: dict) -> tuple[subprocess.Popen, str, int]:
    """A server process on a free port of 127.0.0.1, ready to answer: (process, url, port)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *argv, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/", process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, url, port


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


def metric(text: str, name: str) -> float:
    """The sum of a Prometheus metric's samples in ``/metrics`` text (0 when absent)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def collection_overhead(
    package: Path, env: dict, name: str, row: list, connections: int, seconds: float, rounds: int = 5
) -> str:
    """The service, 1 worker, on ``name``: collection off, then at rate 1 (to a temporary folder), ``rounds`` times
    in this run; the median of the rounds' throughput ratios on/off (a round's two runs are seconds apart, so a
    drifting host weighs on both), p99s, and what was collected."""
    body = {"model_name": name, "data": row}
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    collected = dropped = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for mode in ("off", "on"):
                rate = {"SCORING_COLLECT_RATE": "1" if mode == "on" else "0", "SCORING_COLLECT_DIR": folder}
                argv = ["-m", "ml_service.scoring.serve", "--package", str(package), "--workers", "1"]
                process, url, _ = start_server(argv, {**env, **rate})
                try:
                    server = psutil.Process(process.pid)
                    before = metric(httpx.get(f"{url}/metrics", timeout=10).text, "scoring_requests_total")
                    cpu = sum(server.cpu_times()[:2])
                    result = wrk(f"{url}/score", body, connections, seconds, process)
                    time.sleep(FLUSH_WAIT)  # the writer's last batch of the run is on the server's clock too
                    cpu = sum(server.cpu_times()[:2]) - cpu
                    text = httpx.get(f"{url}/metrics", timeout=10).text
                    result["cpu_us"] = cpu / (metric(text, "scoring_requests_total") - before) * 1e6
                    runs[mode].append(result)
                    collected += metric(text, "scoring_collected_records_total")
                    dropped += metric(text, "scoring_collect_dropped_records_total")
                finally:
                    process.terminate()
                    process.wait(timeout=30)
        lines = sum(len(f.read_bytes().splitlines()) for f in Path(folder).rglob("*.jsonl"))
    pairs = list(zip(runs["off"], runs["on"], strict=True))
    ratios = sorted(on["rps"] / off["rps"] for off, on in pairs)
    cpu = sorted(on["cpu_us"] / off["cpu_us"] for off, on in pairs)
    cells = {
        mode: ", ".join(f"{r['rps']:,.0f} req/s (p99 {r['99%']:.1f} ms, {r['cpu_us']:.0f} µs CPU)" for r in results)
        for mode, results in runs.items()
    }

    def median(values: list[float]) -> str:
        return f"**median {values[len(values) // 2]:.3f}** (rounds {', '.join(f'{x:.3f}' for x in values)})"

    return (
        f"collection on `{name}`, 1 worker, {rounds} rounds: off {cells['off']}; rate 1 {cells['on']}\n"
        f"throughput on/off: {median(ratios)}; server CPU per request on/off: {median(cpu)}; "
        f"{lines:,} records written ({collected:,.0f} counted before each stop), {dropped:,.0f} dropped"
    )


def collection_in_process(package: Path, name: str, row: list, rounds: int = 30, size: int = 400) -> str:
    """The app itself (no HTTP server, no wrk: ``httpx.ASGITransport``), collection off and at rate 1, in this one
    process: ``rounds`` windows of ``size`` requests (32 at a time) each, alternating, so that a busy host weighs on
    both alike; CPU (process time) and wall time per request."""
    import asyncio
    import logging

    from ml_service.scoring.app import LOGGER_NAME, create_app
    from ml_service.scoring.serve import tune_gc
    from ml_service.util.env_variables import Settings

    logging.getLogger(LOGGER_NAME).disabled = True  # the request log is the same on both sides: left out
    with tempfile.TemporaryDirectory() as folder:
        apps = {
            mode: create_app(
                ModelStore.from_package(package, 8), Settings(scoring_collect_rate=rate, scoring_collect_dir=folder)
            )
            for mode, rate in (("off", 0.0), ("on", 1.0))
        }
        tune_gc()

        async def window(client: httpx.AsyncClient, count: int) -> None:
            gate = asyncio.Semaphore(32)

            async def one() -> None:
                async with gate:
                    answer = await client.post("/score", json={"model_name": name, "data": row})
                    answer.raise_for_status()

            await asyncio.gather(*(one() for _ in range(count)))

        async def run() -> dict[str, list[float]]:
            spent = {mode: [0.0, 0.0] for mode in apps}
            clients = {
                mode: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
                for mode, app in apps.items()
            }
            for client in clients.values():
                await window(client, size // 2)  # warm: the model loaded, the first files begun
            for i in range(rounds):
                for mode in ("off", "on") if i % 2 else ("on", "off"):
                    cpu, wall = time.process_time(), time.perf_counter()
                    await window(clients[mode], size)
                    spent[mode][0] += time.process_time() - cpu
                    spent[mode][1] += time.perf_counter() - wall
            return spent

        spent = asyncio.run(run())
        apps["on"].state.collector.close()
        lines = sum(len(f.read_bytes().splitlines()) for f in Path(folder).rglob("*.jsonl"))
    count = rounds * size
    per = {mode: (cpu / count * 1e6, wall / count * 1e6) for mode, (cpu, wall) in spent.items()}
    return (
        f"collection in process (the app through ASGI, {rounds} alternating windows of {size} requests): "
        f"off {per['off'][0]:.0f} µs CPU, {per['off'][1]:.0f} µs wall per request; "
        f"rate 1 {per['on'][0]:.0f} µs CPU, {per['on'][1]:.0f} µs wall; "
        f"**CPU on/off {per['on'][0] / per['off'][0]:.3f}**, wall on/off {per['on'][1] / per['off'][1]:.3f}; "
        f"{lines:,} records written"
    )


def collector_cost(store: ModelStore, name: str, row: list, count: int = 20_000) -> str:
    """In this process, without HTTP: CPU microseconds per request that collection adds on the request path
    (``offer``) and in the writer thread (encoding and writing the lines), for ``name``'s one-row request. Thread CPU
    time, not wall time: other processes on a shared host, and the writer holding the GIL meanwhile, do not count."""
    from ml_service.monitoring.collect import Collector, LocalFiles, Record
    from ml_service.scoring.serve import tune_gc

    loaded = store.get(name)
    tune_gc()  # the garbage collector as in a serving process (with Python's defaults, collections weigh most)
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"90")]
    predictions = to_json_values(predict(loaded, checked_rows_to_input(loaded.schema, row, loaded.array_input)))
    with tempfile.TemporaryDirectory() as folder:
        collector = Collector(LocalFiles(Path(folder), 1 << 30), 1.0, max_records=count, max_rows=count * len(row))
        ids = [f"{i:032x}" for i in range(count)]
        started = time.thread_time()
        for request_id in ids:
            collector.offer(request_id, headers, loaded, row, predictions)
        offer = (time.thread_time() - started) / count * 1e6
        collector.close()
        sink = LocalFiles(Path(folder) / "direct", 1 << 30)
        records = [Record(time.time(), f"{i:032x}", headers, loaded, row, predictions) for i in range(count)]
        started = time.thread_time()
        for start in range(0, count, 1_000):
            sink.write(records[start : start + 1_000])
        write = (time.thread_time() - started) / count * 1e6
        sink.close()
    return f"collection's CPU per request, in process: {offer:.2f} µs on the request path, {write:.2f} µs in the writer"


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
    parser.add_argument("--collect-model", help="model of the collection on/off comparison (default: the first)")
    parser.add_argument("--collection-only", action="store_true", help="only the collection on/off comparison")
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
    collect_model = args.collect_model or next(iter(rows), None)
    if collect_model not in store:
        print(f"bench_scoring: no model {collect_model!r} in {args.package}", file=sys.stderr)
        return 2
    collect_row = rows.get(collect_model) or store.entry(collect_model).metadata()["sample_input"][:1]
    if args.collection_only:
        print(f"single-row POST /score, wrk -t1 -c{args.connections} -d{int(args.seconds)}s, loopback")
        print(collection_overhead(args.package, env, collect_model, collect_row, args.connections, args.seconds))
        print(collection_in_process(args.package, collect_model, collect_row))
        print(collector_cost(store, collect_model, collect_row))
        return 0
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
        extra = {"AZUREML_MODEL_DIR": str(args.package.resolve())} if label == AZML else {}
        process, url, port = start_server(argv, {**env, **extra})
        try:
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
    print(collection_overhead(args.package, env, collect_model, collect_row, args.connections, args.seconds))
    print(collection_in_process(args.package, collect_model, collect_row))
    print(collector_cost(store, collect_model, collect_row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
