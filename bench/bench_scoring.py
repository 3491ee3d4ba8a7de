"""Benchmark single-row POST /score for every model kind the samples serve, side by side in one run.

    .venv/bin/python bench/bench_scoring.py [--package local/package] [--seconds 6] [--connections 32]

Needs wrk (``apt-get install -y wrk``) and the package ``make run`` (or ``make package``) writes. For each model
kind (the diabetes Ridge on the NumPy path, the FLAML diabetes pipeline, the ExtraTrees energy model, one ridge
partition model) it measures, loopback only, each server warmed up for 2 s first:

- this service (``ml_service.scoring.serve --package``) with 1 and with 2 workers;
- azureml-inference-server-http (one gunicorn worker, its default) running the project's entry script
  ``ml_service/scoring/azureml_score.py`` on the same package;
- the in-process ceiling: ``model.predict`` of 1 row and of 32 rows, in ms per call.

It also checks, on the packaged models, that the service's answers under concurrent load equal unbatched
``predict`` row by row, and measures what inference data collection costs: one model (``--collect-model``,
default the first of the table: the cheapest, where collection weighs most) served by 1 worker with collection off
and at rate 1 (every request written to a temporary folder), alternated 5 times; it prints the median of the rounds'
throughput ratios, the records collected and dropped (``/metrics``), and collection's CPU per request measured in
this process (thread CPU time: what a busy host's noise does not move); and the app itself through ASGI in this
process, off and on in 30 alternating windows (CPU and wall time per request: on a busy shared host, the numbers
least moved by other processes). ``--collection-only`` runs just that.
The load generator shares the 2 cores with the server: compare ratios within one run. Not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
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
    "diabetes_model": "FLAML ElasticNet pipeline",
    "nyc_energy_model": "ExtraTrees",
    "nyc_energy_regions_model/region=r0001": "ridge partition pipeline",
}
FLUSH_WAIT = 0.5  # seconds: longer than the collector's flush interval
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


def wrk(url: str, body: dict, connections: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(json.dumps(body))))
    try:
        subprocess.run(["wrk", "-t1", f"-c{connections}", "-d2s", "-s", script.name, url], capture_output=True)
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", script.name, url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    fields = {"non2xx": 0, "errors": ""}
    for line in out.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")):
            fields[parts[0]] = _ms(parts[1])
        elif line.startswith("Requests/sec:"):
            fields["rps"] = float(parts[1])
        elif line.strip().startswith("Non-2xx"):
            fields["non2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            fields["errors"] = line.strip()
        elif " requests in " in line:
            fields["requests"] = int(parts[0])
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
                port = free_port()
                argv = ["-m", "ml_service.scoring.serve", "--package", str(package), "--workers", "1"]
                process = subprocess.Popen(
                    [sys.executable, *argv, "--port", str(port)],
                    cwd=ROOT,
                    env={**env, **rate},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    url = f"http://127.0.0.1:{port}"
                    wait_ready(url + "/", process)
                    server = psutil.Process(process.pid)
                    before = metric(httpx.get(f"{url}/metrics", timeout=10).text, "scoring_requests_total")
                    cpu = sum(server.cpu_times()[:2])
                    result = wrk(f"{url}/score", body, connections, seconds)
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


def ceiling(store: ModelStore, name: str, row: list, seconds: float = 1.0) -> tuple[float, float]:
    """ms per predict call for 1 row and for 32 rows, in this process."""
    loaded = store.get(name)
    out = []
    for rows in ([row], [row] * 32):
        features = checked_rows_to_input(loaded.schema, rows, loaded.array_input)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predict(loaded, features)
            calls += 1
        out.append((time.perf_counter() - started) / calls * 1000)
    return out[0], out[1]


def check_equality(url: str, store: ModelStore, rows: dict[str, list]) -> str:
    """Concurrent callers, mixed request sizes: each answer must equal unbatched predict (row by row when the model is
    batched across requests, request by request otherwise)."""
    bad = []
    with ThreadPoolExecutor(16) as pool:
        for name, sample in rows.items():
            loaded = store.get(name)
            requests = [[sample[0]] * (1 + i % 5) for i in range(64)]
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
                    one = to_json_values(
                        predict(loaded, checked_rows_to_input(loaded.schema, part[:1], loaded.array_input))
                    )
                    expected = one * len(part)
                else:
                    expected = to_json_values(
                        predict(loaded, checked_rows_to_input(loaded.schema, part, loaded.array_input))
                    )
                if answer != expected:
                    bad.append(name)
                    break
    kinds = ", ".join(f"{n}: {'batched' if store.get(n).batch_invariant else 'per request'}" for n in rows)
    return (
        "equal to unbatched predict for every model" if not bad else f"DIFFERENT for {sorted(set(bad))}"
    ) + f" ({kinds})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, default=ROOT / "local" / "package")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--collect-model", help="model of the collection on/off comparison (default: the first)")
    parser.add_argument("--collection-only", action="store_true", help="only the collection on/off comparison")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_scoring: wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    try:
        store = ModelStore.from_package(args.package, 64)
    except Exception as exc:  # noqa: BLE001 - one line naming the fix
        print(f"bench_scoring: {exc}: run make package first", file=sys.stderr)
        return 2
    rows = {name: store.entry(name).metadata()["sample_input"][:1] for name in MODELS if name in store}
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
    servers = {
        "service, 1 worker": ["-m", "ml_service.scoring.serve", "--package", str(args.package), "--workers", "1"],
        "service, 2 workers": ["-m", "ml_service.scoring.serve", "--package", str(args.package), "--workers", "2"],
        "azmlinfsrv + azureml_score.py": [
            "-m",
            "ml_service.scoring.inference_server",
            "--entry_script",
            str(ROOT / "ml_service" / "scoring" / "azureml_score.py"),
        ],
    }
    results: dict[tuple[str, str], dict] = {}
    equality = ""
    for label, argv in servers.items():
        port = free_port()
        extra = {"AZUREML_MODEL_DIR": str(args.package.resolve())} if "azml" in label else {}
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
            if label == "service, 2 workers":
                equality = check_equality(url, store, rows)
            for name, row in rows.items():
                results[(label, name)] = wrk(
                    f"{url}/score", {"model_name": name, "data": row}, args.connections, args.seconds
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    ceilings = {name: ceiling(store, name, row[0]) for name, row in rows.items()}
    print(
        f"single-row POST /score, wrk -t1 -c{args.connections} -d{int(args.seconds)}s, loopback, {os.cpu_count()} cores"
    )
    print(
        "| model | service, 1 worker | service, 2 workers | azmlinfsrv + azureml_score.py "
        "| 2 workers / azmlinfsrv | in-process predict, 1 row / 32 rows |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name in rows:
        cells = []
        for label in servers:
            r = results[(label, name)]
            cell = f"{r['rps']:,.0f} req/s, p50 {r['50%']:.1f} ms, p99 {r['99%']:.1f} ms"
            if r["non2xx"] or r["errors"]:
                cell += f" ({r['non2xx']} non-2xx {r['errors']})"
            cells.append(cell)
        ratio = results[("service, 2 workers", name)]["rps"] / results[("azmlinfsrv + azureml_score.py", name)]["rps"]
        one, many = ceilings[name]
        print(f"| `{name}` ({MODELS[name]}) | {' | '.join(cells)} | {ratio:.1f}x | {one:.2f} ms / {many:.2f} ms |")
    print(f"batching check under load: {equality}")
    print(collection_overhead(args.package, env, collect_model, collect_row, args.connections, args.seconds))
    print(collection_in_process(args.package, collect_model, collect_row))
    print(collector_cost(store, collect_model, collect_row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
