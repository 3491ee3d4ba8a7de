"""Traffic for monitoring: realistic and deliberately shifted requests to the scoring service, and their actuals.

For every production model of the chosen use cases, rows are drawn at random from the use case's own prepared
data (the distribution the model was trained on: "realistic"). Some models (every `--shift-every`-th of all of
them by name, or the ones named) get shifted rows instead: every numeric input column moved by `--shift-by`
standard deviations of that model's data (sensor drift, a unit change), so the monitoring report has both kinds.
The outcome (label) of every row sent is written as actuals, keyed as the monitor step joins them: partition
columns and time column for a time series, else the request id (sent as `X-Request-Id`) and the row's position
in its request. The label of a shifted row stays the real one, so a shifted model also decays.

Without `--url`, it starts the service from `--package` on a free port of 127.0.0.1 with collection on (every
request, into `<output>/collected`), sends the traffic, and stops it (which flushes the collected files).
`<output>/traffic.json` says what was sent and which models were shifted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.config import ConfigError, UseCaseConfig, project_root, select_use_cases
from ml_service.util.env_variables import SettingsError, load_settings
from ml_service.util.files import write_json

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def served_models(url: str, headers: dict[str, str]) -> dict[str, str]:
    """Every model the service serves: name -> version (GET /models, page by page)."""
    import httpx

    names: dict[str, str] = {}
    offset = 0
    while True:
        answer = httpx.get(f"{url}/models", params={"offset": offset, "limit": 10000}, headers=headers, timeout=30)
        answer.raise_for_status()
        page = answer.json()
        names.update({item["name"]: str(item["version"]) for item in page})
        offset += len(page)
        if not page or offset >= int(answer.headers.get("X-Total-Count", offset)):
            return names


def prepared_partitions(name: str, root: Path, datastore: Path) -> tuple[UseCaseConfig, dict[str, pd.DataFrame]]:
    """The use case's data as training saw it: `{partition key: rows}`."""
    from ml_service.data_checks import read_csv
    from ml_service.pipelines.preparation import prepare_frame, trained_raw_data
    from ml_service.use_case import load_use_case

    use_case = load_use_case(name, root)
    raw = trained_raw_data(use_case, datastore)
    return use_case.config, prepare_frame(read_csv(raw, use_case.config), use_case, str(raw))


def draw_rows(part: pd.DataFrame, config: UseCaseConfig, rows: int, shift_by: float, rng: np.random.Generator):
    """`rows` rows drawn from `part` (inputs in the model's column order, and the frame they came from), with
    every numeric input moved by `shift_by` standard deviations when `shift_by` is not 0."""
    chosen = part.iloc[rng.integers(0, len(part), size=rows)].reset_index(drop=True)
    inputs = chosen[list(config.input_columns)].copy()
    for column in config.input_columns:
        kind = config.columns[column].type
        if kind in ("number", "integer") and shift_by:
            values = pd.to_numeric(part[column], errors="coerce")
            spread = float(values.std()) if values.std() > 0 else max(abs(float(values.mean())), 1.0)
            inputs[column] = pd.to_numeric(inputs[column], errors="coerce") + shift_by * spread
            if kind == "integer":
                inputs[column] = inputs[column].round().astype("Int64")
        elif kind == "datetime":
            inputs[column] = pd.to_datetime(inputs[column]).dt.strftime(TIME_FORMAT)
    records = inputs.astype(object).where(inputs.notna(), None).values.tolist()
    return records, chosen


def pick_shifted(models: Sequence[str], every: int, explicit: Sequence[str]) -> set[str]:
    """Models to shift: the ones named (or under a named prefix), else every `every`-th by name (0: none)."""
    if explicit:
        return {m for m in models if any(m == p or m.startswith(p.rstrip("/") + "/") for p in explicit)}
    return {m for i, m in enumerate(sorted(models)) if every and i % every == 0}


def send(url: str, headers: dict[str, str], requests: list[tuple[str, str, list]], workers: int = 4) -> list[str]:
    """POST every (request id, model, rows); the failures, one line each."""
    import httpx

    def one(client: httpx.Client, item: tuple[str, str, list]) -> str | None:
        request_id, model, rows = item
        answer = client.post(
            f"{url}/score",
            json={"model_name": model, "data": rows},
            headers={**headers, "X-Request-Id": request_id},
        )
        return None if answer.status_code == 200 else f"{model}: HTTP {answer.status_code} {answer.text[:200]}"

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(workers) as pool:
        return [p for p in pool.map(lambda item: one(client, item), requests) if p]


def generate(
    url: str,
    names: Sequence[str],
    root: Path,
    datastore: Path,
    output: Path,
    rows: int,
    per_request: int,
    shift_by: float,
    shift_every: int,
    shift: Sequence[str],
    seed: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    served = served_models(url, headers)
    requests: list[tuple[str, str, list]] = []
    actuals: dict[str, list[pd.DataFrame]] = {}
    sent: dict[str, int] = {}
    chosen_models = {}
    for name in names:
        config, parts = prepared_partitions(name, root, datastore)
        ours = {(f"{config.model_name}/{key}" if key else config.model_name): key for key in parts}
        chosen_models[name] = (config, parts, ours, [m for m in ours if m in served])
    # every n-th of all the models, by name: single models and partitions alike, some shifted and some not
    shifted = pick_shifted([m for *_, models in chosen_models.values() for m in models], shift_every, shift)
    shifted_all = sorted(shifted)
    for name, (config, parts, ours, models) in chosen_models.items():
        for model in models:
            records, chosen = draw_rows(parts[ours[model]], config, rows, shift_by if model in shifted else 0.0, rng)
            ids = []
            for start in range(0, len(records), per_request):
                request_id = uuid.uuid4().hex
                requests.append((request_id, model, records[start : start + per_request]))
                ids += [(request_id, i) for i in range(len(records[start : start + per_request]))]
            if config.time is not None:
                keys = chosen[[*config.partition_columns, config.time.column, config.label]].copy()
                keys[config.time.column] = pd.to_datetime(keys[config.time.column]).dt.strftime(TIME_FORMAT)
            else:
                keys = pd.DataFrame(ids, columns=["request_id", "row"]).assign(**{config.label: chosen[config.label]})
            actuals.setdefault(name, []).append(keys)
            sent[model] = len(records)
    order = rng.permutation(len(requests))  # interleaved, as real traffic is
    failures = send(url, headers, [requests[i] for i in order])
    folder = output / "actuals"
    folder.mkdir(parents=True, exist_ok=True)
    for name, frames in actuals.items():
        target = folder / f"{name}.csv"
        staging = target.with_name(f".{target.name}.tmp")
        pd.concat(frames, ignore_index=True).to_csv(staging, index=False)
        os.replace(staging, target)
    summary = {
        "url": url,
        "requests": len(requests),
        "rows": sum(sent.values()),
        "failed": len(failures),
        "failures": failures[:20],
        "sent": sent,
        "shifted": shifted_all,
        "shift_by": shift_by,
    }
    write_json(output / "traffic.json", summary)
    return summary


def _start_service(package: Path, collected: Path, log: Path) -> tuple[subprocess.Popen, str]:
    from ml_service.util.serve_and_smoke_test import free_port, start_service, tail, wait_own_server

    collecting = {"SCORING_COLLECT_RATE": "1", "SCORING_COLLECT_DIR": str(collected)}
    server, url, instance = start_service(package, free_port(), log, collecting)
    problem = wait_own_server(url, instance, server, {}, 120)
    if problem:
        server.kill()
        server.wait()
        raise RuntimeError(f"{problem}; last lines of {log}:\n{tail(log)}")
    return server, url


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m ml_service.monitoring.traffic", description=__doc__.splitlines()[0])
    cli.add_argument("--use-case", help="declared use case(s) or group(s), comma-separated")
    cli.add_argument("--all", action="store_true", help="every declared use case")
    cli.add_argument("--url", help="a running service (default: start one from --package, collecting)")
    cli.add_argument("--package", type=Path, default=Path("local/package"), help="package to serve without --url")
    cli.add_argument(
        "--output", type=Path, help="folder for collected/, actuals/, traffic.json (default: <LOCAL_DIR>/monitoring)"
    )
    cli.add_argument("--rows", type=int, default=200, help="rows sent to each model (default 200)")
    cli.add_argument("--rows-per-request", type=int, default=10)
    cli.add_argument("--shift-by", type=float, default=3.0, help="shift, in standard deviations (default 3)")
    cli.add_argument("--shift-every", type=int, default=3, help="shift every n-th model by name (0: none)")
    cli.add_argument(
        "--shift",
        action="append",
        default=[],
        metavar="MODEL",
        help="shift this model (or model set prefix) instead; repeatable",
    )
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args(argv)
    if args.rows < 1 or args.rows_per_request < 1 or args.shift_every < 0:
        print("error: --rows and --rows-per-request must be at least 1, --shift-every at least 0", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        root = project_root(settings.project_root)
        names = select_use_cases(args.use_case, root, args.all)
    except (SettingsError, ConfigError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    output = args.output or settings.local_path / "monitoring"
    headers = {"Authorization": f"Bearer {settings.scoring_api_key}"} if settings.scoring_api_key else {}
    server = None
    url = args.url
    if url is None:
        if not args.package.is_dir():
            print(f"error: no package at {args.package}: run 'make run' (or make package) first", file=sys.stderr)
            return 2
        try:
            server, url = _start_service(
                args.package, output / "collected", settings.local_path / "logs" / "traffic.log"
            )
        except RuntimeError as exc:
            print(f"error: traffic: {exc}", file=sys.stderr)
            return 1
        print(f"traffic: service started on {url}, collecting into {output / 'collected'}", flush=True)
    try:
        summary = generate(
            url.rstrip("/"),
            names,
            root,
            settings.local_path / "datastore",
            output,
            args.rows,
            args.rows_per_request,
            args.shift_by,
            args.shift_every,
            args.shift,
            args.seed,
            headers,
        )
    finally:
        if server is not None:  # a graceful stop: the service flushes and closes its collected files
            from ml_service.util.serve_and_smoke_test import stop_service

            stop_service(server, timeout=30)
    print(
        f"traffic: {summary['requests']} requests, {summary['rows']} rows to {len(summary['sent'])} model(s); "
        f"shifted by {args.shift_by:g} sd: {', '.join(summary['shifted']) or 'none'}; "
        f"{summary['failed']} failed; actuals in {output / 'actuals'}"
    )
    for failure in summary["failures"][:5]:
        print(f"traffic: failed: {failure}", file=sys.stderr)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
