"""Smoke-test a running scoring service: every deployed model must answer with the right number of predictions.

    python -m ml_service.util.smoke_test_scoring_service --url http://127.0.0.1:5001 [--key KEY | --key-file F]
        [--url-file F] [--timeout S] [--partitions N] [--package DIR]

Default mode: waits (at most ``--timeout`` seconds) until ``/health`` says ready, lists ``/models``, then sends
each model its sample input (``GET /models/<name>``'s ``sample_input``, stored in the model's metadata; without
one, a row built from the input columns: numbers 1.0, date/times "2017-08-13 06:00") with a W3C ``traceparent``
header.

``--package DIR`` (the package that was deployed: the build context or its ``package/`` folder): for an Azure ML
online endpoint, which routes only ``/score`` to the container. Models and sample rows come from the package
(``manifest.json``, each model's ``model.json``, a model set's manifest), not from ``/models``; readiness is
``POST /score`` with the first model, retried while the answer is a connection error, 404 (other than the
service's "unknown model"), 408, 429 or 5xx, at most ``--timeout`` seconds; then every model is checked with
``POST /score`` only.

Both modes: model sets are sampled (the first ``--partitions`` partition models of each set); the key is sent as
``Authorization: Bearer <key>``. Prints one line per model and a summary; exits 1 naming the failing models, 2
when the service never became ready (or the package cannot be read).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_TIME = "2017-08-13 06:00"


def sample_rows(detail: dict[str, Any]) -> list[list[Any]]:
    sample = detail.get("sample_input")
    if isinstance(sample, list) and sample and all(isinstance(r, list) for r in sample):
        return sample
    schema = detail.get("input_schema") or {}
    columns = detail.get("input_columns") or list(schema)
    return [[DEFAULT_TIME if schema.get(c) == "datetime" else 1.0 for c in columns]]


def wait_ready(client: httpx.Client, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = client.get("/health", timeout=5)
            if response.status_code == 200 and response.json().get("ready"):
                return response.json()
            last = f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(1)
    print(f"smoke test: service not ready after {timeout:.0f} s ({last})", file=sys.stderr)
    return None


def list_models(client: httpx.Client) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = []
    while True:
        response = client.get("/models", params={"offset": len(models), "limit": 10000})
        response.raise_for_status()
        page = response.json()
        models += page
        total = int(response.headers.get("x-total-count", len(models)))
        if not page or len(models) >= total:
            return models


def choose(models: list[dict[str, Any]], partitions: int) -> list[dict[str, Any]]:
    """Every single model and the first ``partitions`` models of each model set."""
    chosen, per_set = [], {}
    for model in models:
        owner = model.get("model_set")
        if owner:
            per_set[owner] = per_set.get(owner, 0) + 1
            if per_set[owner] > partitions:
                continue
        chosen.append(model)
    return chosen


def check_model(client: httpx.Client, model: dict[str, Any]) -> tuple[bool, str]:
    name = model["name"]
    detail = client.get(f"/models/{name}")
    if detail.status_code != 200:
        return False, f"GET /models/{name}: HTTP {detail.status_code}"
    return score_rows(client, name, sample_rows(detail.json()))


def score_rows(client: httpx.Client, name: str, rows: list[list[Any]]) -> tuple[bool, str]:
    """POST /score with ``rows`` for model ``name``: ok when it answers 200 with one prediction per row."""
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    started = time.perf_counter()
    response = client.post("/score", json={"model_name": name, "data": rows}, headers={"traceparent": traceparent})
    ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text[:200]}"
    body = response.json()
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != len(rows):
        got = len(predictions) if isinstance(predictions, list) else predictions
        return False, f"expected {len(rows)} predictions, got {got}"
    return True, f"v{body.get('model_version')} {len(predictions)} predictions in {ms:.0f} ms"


# Answers of an endpoint (or a proxy in front of the service) that is not routing to a ready container yet.
NOT_YET = {404, 408, 429, 500, 502, 503, 504}


def package_models(folder: Path) -> list[dict[str, Any]]:
    """Every servable model of a package, catalogued as the service does it (no model is loaded).

    Each: ``name``, ``model_set`` (partition models only) and ``metadata`` (a callable reading its ``model.json``
    over the set-wide defaults, called only for the models chosen).
    """
    from ml_service.scoring.model_store import PACKAGE_MANIFEST, entries_for_folder, package_root

    root = package_root(folder)
    manifest = json.loads((root / PACKAGE_MANIFEST).read_text(encoding="utf-8"))
    models = []
    for item in manifest["models"]:
        for entry in entries_for_folder(item["name"], item["version"], root / item["path"], item.get("metrics")):
            models.append({"name": entry.name, "model_set": entry.model_set, "metadata": entry.metadata})
    return models


def wait_scoring(client: httpx.Client, name: str, rows: list[list[Any]], timeout: float) -> bool:
    """Retry ``POST /score`` for ``name`` until something other than "not routed yet" answers (see NOT_YET)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = client.post("/score", json={"model_name": name, "data": rows}, timeout=10)
            unknown_model = response.status_code == 404 and "unknown model" in response.text
            if response.status_code not in NOT_YET or unknown_model:
                return True
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1)
    print(f"smoke test: POST /score for {name} not answered after {timeout:.0f} s ({last})", file=sys.stderr)
    return False


def package_mode(client: httpx.Client, url: str, package: Path, timeout: float, partitions: int) -> int:
    try:
        models = package_models(package)
        chosen = choose(models, partitions)
        rows = {model["name"]: sample_rows(model["metadata"]()) for model in chosen}
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        print(f"smoke test: cannot read the package {package}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if not chosen:
        print(f"smoke test: the package {package} has no model", file=sys.stderr)
        return 1
    first = chosen[0]["name"]
    if not wait_scoring(client, first, rows[first], timeout):
        return 2
    failed = check_each(chosen, lambda model: score_rows(client, model["name"], rows[model["name"]]))
    print(
        f"smoke test: {url}: {len(chosen) - len(failed)}/{len(chosen)} models answered "
        f"({len(models)} in the package, POST /score only)" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def check_each(models: list[dict], check: Callable[[dict], tuple[bool, str]]) -> list[str]:
    """Run `check` on every model, print one ok/FAIL line each; the names of those that failed."""
    failed = []
    for model in models:
        try:
            ok, message = check(model)
        except (httpx.HTTPError, ValueError) as exc:
            ok, message = False, f"{type(exc).__name__}: {exc}"
        print(f"  {'ok  ' if ok else 'FAIL'} {model['name']}: {message}")
        if not ok:
            failed.append(model["name"])
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ml_service.util.smoke_test_scoring_service", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--url", help="service base URL, e.g. http://127.0.0.1:5001")
    parser.add_argument("--url-file", type=Path, help="file holding the URL (written by the deployers)")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--key", help="scoring key (default: SCORING_API_KEY)")
    keys.add_argument("--key-file", type=Path, help="file holding the scoring key")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    parser.add_argument("--partitions", type=int, default=5, help="partition models tested per model set")
    parser.add_argument(
        "--package",
        type=Path,
        help="the deployed package: models and samples from it, POST /score only (online endpoints)",
    )
    args = parser.parse_args(argv)
    url = args.url or (args.url_file.read_text().strip() if args.url_file else "")
    if not url:
        parser.error("give --url or --url-file")
    key = args.key or (args.key_file.read_text().strip() if args.key_file else os.environ.get("SCORING_API_KEY", ""))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = url.rstrip("/").removesuffix("/score")
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        if args.package is not None:
            return package_mode(client, url, args.package, args.timeout, args.partitions)
        health = wait_ready(client, args.timeout)
        if health is None:
            return 2
        try:
            models = list_models(client)
        except (httpx.HTTPError, ValueError) as exc:
            print(f"smoke test: cannot list models at {url}/models: {exc}", file=sys.stderr)
            return 1
        chosen = choose(models, args.partitions)
        failed = check_each(chosen, lambda model: check_model(client, model))
    print(
        f"smoke test: {url}: {len(chosen) - len(failed)}/{len(chosen)} models answered "
        f"({len(models)} servable)" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed or not chosen else 0


if __name__ == "__main__":
    sys.exit(main())
