"""Inference data collection: the collector (sampling, bounded queue, rotated files), the real service collecting
at rate 1 and 0, the Azure ML data-collector path, the deployment's data_collector, and the reader of both formats."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import yaml
from azure.ai.ml import load_online_deployment
from azure.ai.ml._local_endpoints.mdc_config_resolver import MdcConfigResolver
from prometheus_client import CollectorRegistry

from ml_service.monitoring.collect import (
    AzureDataCollector,
    Collector,
    LocalFiles,
    Record,
    azure_configured,
    collector_for,
)
from ml_service.monitoring.collected import META_COLUMNS, read_collected
from ml_service.scoring.deploy import common, online_endpoint
from ml_service.scoring.inputs import Column
from ml_service.scoring.model_store import LoadedModel, ModelEntry
from ml_service.util.env_variables import load_settings
from tests.test_scoring_support import (
    ENERGY_ROWS,
    build_model_set,
    energy_model,
    save_single,
    serve_test_package,
    stop,
    write_package,
)

SOURCE = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
    "/onlineEndpoints/scoring/deployments/blue"
)


def local_record(request_id: str, model: str, rows: list, predictions: list, **extra) -> dict:
    record = {
        "time": "2026-12-01T22:40:00.123+00:00",
        "request_id": request_id,
        "traceparent": None,
        "model_name": model,
        "model_version": "3",
        "model_set": None,
        "set_version": None,
        "columns": ["timeStamp", "precip", "temp"],
        "data": rows,
        "predictions": predictions,
    }
    return {**record, **extra}


def write_lines(path: Path, lines: list, end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + end, encoding="utf-8")
    return path


def azure_event(collection: str, correlation: str, data: list, time: str = "2026-12-01T22:40:01Z") -> dict:
    """One line of an Azure data-collector file, in the shape Microsoft's "Collect production data from models for
    real-time inferencing" shows under "Store collected data in Blob Storage"."""
    return {
        "specversion": "1.0",
        "id": f"id-{collection}-{correlation}",
        "source": SOURCE,
        "type": f"azureml.inference.{collection}",
        "datacontenttype": "application/json",
        "time": time,
        "data": data,
        "correlationid": correlation,
        "xrequestid": correlation,
        "modelversion": "default",
        "collectdatatype": "pandas.core.frame.DataFrame",
        "agent": "azureml-ai-monitoring/1.0.0",
        "contentrange": "bytes 0-100/101",
    }


def test_local_records_become_one_frame_per_model(tmp_path):
    hour = tmp_path / "2026" / "12" / "01" / "22"
    write_lines(
        hour / "host-1-0.jsonl",
        [
            local_record("a", "energy", [["2017-08-13 06:00", 0.0, 50.1], ["2017-08-13 07:00", 0.5, 51]], [1.5, None]),
            local_record(
                "b",
                "regions/region=r1",
                [["2017-08-13 06:00", 0, 40]],
                [7.0],
                model_set="regions",
                set_version="5",
                model_version="2",
                time="2026-12-01T22:39:00Z",
            ),
        ],
    )
    write_lines(hour / "host-1-1.jsonl", [local_record("c", "energy", [["2017-08-13 08:00", 0, 52]], [2.5])])
    collected = read_collected(tmp_path)
    assert collected.problems == []
    assert sorted(collected.frames) == ["energy", "regions/region=r1"]
    energy = collected.frames["energy"]
    assert list(energy.columns) == ["timeStamp", "precip", "temp", *META_COLUMNS]
    assert energy["request_id"].tolist() == ["a", "a", "c"]
    assert energy["row"].tolist() == [0, 1, 0]
    assert energy["timeStamp"].tolist() == ["2017-08-13 06:00", "2017-08-13 07:00", "2017-08-13 08:00"]
    assert energy["temp"].tolist() == [50.1, 51, 52]
    assert energy["prediction"].iloc[0] == 1.5 and pd.isna(energy["prediction"].iloc[1])
    assert energy["set_version"].tolist() == [None, None, None]
    assert str(energy["time"].dt.tz) == "UTC"
    regions = collected.frames["regions/region=r1"]
    assert regions[["model_version", "set_version", "request_id"]].values.tolist() == [["2", "5", "b"]]
    assert regions["time"].iloc[0] == pd.Timestamp("2026-12-01T22:39:00Z")


def test_bad_files_are_listed_and_the_rest_is_read(tmp_path):
    good = local_record("ok", "m", [["2017-08-13 06:00", 0, 50]], [1.0])
    write_lines(tmp_path / "a" / "good.jsonl", [good])
    (tmp_path / "a" / "empty.jsonl").write_bytes(b"")
    (tmp_path / "a" / "blank.jsonl").write_text("\n\n  \n")
    (tmp_path / "a" / "binary.jsonl").write_bytes(b"\x00\xff\xfe garbage\n")
    # a file still being written: its last line is cut; the complete lines before it are read
    partial = json.dumps(local_record("p", "m", [["2017-08-13 07:00", 0, 51]], [2.0]))
    (tmp_path / "a" / "partial.jsonl").write_text(partial + "\n" + partial[:40])
    write_lines(
        tmp_path / "a" / "mixed.jsonl",
        [
            good,
            "{not json",
            "[1, 2]",
            {"hello": "world"},
            local_record("x", "m", [["2017-08-13 06:00", 0]], [1.0]),  # a row short of the three columns
            local_record("y", "m", [["2017-08-13 06:00", 0, 1]], [1.0, 2.0]),  # two predictions for one row
            local_record("z", "m", [["t", 0, 1]], [1.0], time="yesterday"),
        ],
    )
    (tmp_path / "a" / "gone.jsonl").symlink_to(tmp_path / "deleted")  # listed, but reading it fails
    collected = read_collected(tmp_path)
    frame = collected.frames["m"]
    assert frame["request_id"].tolist() == ["ok", "ok", "p"]  # good.jsonl, mixed.jsonl, partial.jsonl
    problems = "\n".join(collected.problems)
    assert f"{tmp_path / 'a' / 'empty.jsonl'}: empty file" in collected.problems
    assert f"{tmp_path / 'a' / 'blank.jsonl'}: empty file" in collected.problems
    assert f"{tmp_path / 'a' / 'binary.jsonl'}: line 1: not JSON" in problems
    assert f"{tmp_path / 'a' / 'gone.jsonl'}: cannot be read" in problems
    assert f"{tmp_path / 'a' / 'partial.jsonl'}: line 2: partial last line" in problems
    mixed = str(tmp_path / "a" / "mixed.jsonl")
    assert f"{mixed}: line 2: not JSON" in problems
    assert f"{mixed}: line 3: not a JSON object" in problems
    assert f"{mixed}: line 4: not a collected record: no time, request_id" in problems
    assert f"{mixed}: line 5: data is not a list of rows of 3 values" in problems
    assert f"{mixed}: line 6: predictions is not a list of 1 values (one per row)" in problems
    assert f"{mixed}: 1 more bad line(s); 1 record(s) read" in problems  # line 7's bad time: counted, not named
    assert all(line.startswith(str(tmp_path)) for line in collected.problems)


def test_a_missing_folder_is_a_problem_not_an_exception(tmp_path):
    collected = read_collected(tmp_path / "nothing")
    assert collected.frames == {} and collected.problems == [
        f"{tmp_path / 'nothing'}: not a folder (nothing collected there)"
    ]


def azure_files(root: Path, events: dict[str, list[dict]]) -> None:
    """Events in Azure's layout: <endpoint>/<deployment>/<collection>/<yyyy>/<MM>/<dd>/<HH>/<instance id>.jsonl."""
    for collection, lines in events.items():
        write_lines(root / "scoring" / "blue" / collection / "2026" / "12" / "01" / "22" / "inst-1.jsonl", lines)


def test_azure_data_collector_files_are_joined_on_correlation_id(tmp_path):
    inputs = [
        # as the service's adapter logs them: the input columns and the request id as a correlationid column
        azure_event(
            "model_inputs",
            "r1",
            [
                {"timeStamp": "2017-08-13 06:00", "precip": 0.0, "temp": 50.1, "correlationid": "r1"},
                {"timeStamp": "2017-08-13 07:00", "precip": 0.2, "temp": 51.0, "correlationid": "r1"},
            ],
        ),
        # two requests Azure batched into one event under one correlation id; the rows keep their own
        azure_event(
            "model_inputs",
            "batched",
            [
                {"timeStamp": "2017-08-13 08:00", "precip": 0.0, "temp": 40.0, "correlationid": "r2"},
                {"timeStamp": "2017-08-13 09:00", "precip": 0.0, "temp": 41.0, "correlationid": "r3"},
            ],
            time="2026-12-01T22:41:00Z",
        ),
        # a plain score.py's event: no correlationid column, the event's own id joins it
        azure_event("model_inputs", "r4", [{"timeStamp": "2017-08-13 10:00", "precip": 1.0, "temp": 42.0}]),
    ]

    def out(key, model, prediction, model_set=None, set_version=None):
        return {
            "correlationid": key,
            "model_name": model,
            "model_version": "3",
            "model_set": model_set,
            "set_version": set_version,
            "prediction": prediction,
        }

    outputs = [
        azure_event("model_outputs", "r1", [out("r1", "energy", 10.0), out("r1", "energy", 11.0)]),
        azure_event("model_outputs", "r3", [out("r3", "regions/region=r1", 13.0, "regions", "5")]),
        azure_event("model_outputs", "r2", [out("r2", "energy", 12.0)]),
        azure_event("model_outputs", "r4", [{"model_name": "energy", "model_version": "4", "prediction": 14.0}]),
    ]
    azure_files(tmp_path, {"model_inputs": inputs, "model_outputs": outputs})
    collected = read_collected(tmp_path)
    assert collected.problems == []
    energy = collected.frames["energy"]
    assert list(energy.columns) == ["timeStamp", "precip", "temp", *META_COLUMNS]
    assert energy[["request_id", "row", "prediction", "model_version"]].values.tolist() == [
        ["r1", 0, 10.0, "3"],
        ["r1", 1, 11.0, "3"],
        ["r4", 0, 14.0, "4"],
        ["r2", 0, 12.0, "3"],
    ]
    assert energy["temp"].tolist() == [50.1, 51.0, 42.0, 40.0]
    assert energy["time"].iloc[0] == pd.Timestamp("2026-12-01T22:40:01Z")
    regions = collected.frames["regions/region=r1"]
    assert regions[["request_id", "temp", "prediction", "set_version"]].values.tolist() == [["r3", 41.0, 13.0, "5"]]


def test_azure_files_that_cannot_be_joined_are_listed(tmp_path):
    row = {"timeStamp": "2017-08-13 06:00", "precip": 0.0, "temp": 50.0}
    answer = {"model_name": "energy", "model_version": "1", "prediction": 1.0}
    events = {
        "model_inputs": [
            azure_event("model_inputs", "lonely", [row]),
            azure_event("model_inputs", "two-rows", [row, row]),
            azure_event("model_inputs", "ok", [row]),
            {**azure_event("model_inputs", "big", []), "data": "https://blob/x", "datainblob": "true"},
        ],
        "model_outputs": [
            azure_event("model_outputs", "two-rows", [answer]),
            azure_event("model_outputs", "ok", [answer]),
            azure_event("model_outputs", "orphan", [answer]),
        ],
        "request": [{**azure_event("request", "ok", []), "data": {"data": [[1, 2]]}}],
    }
    azure_files(tmp_path, events)
    collected = read_collected(tmp_path)
    assert collected.frames["energy"]["request_id"].tolist() == ["ok"]
    problems = "\n".join(collected.problems)
    inputs_file = tmp_path / "scoring" / "blue" / "model_inputs" / "2026" / "12" / "01" / "22" / "inst-1.jsonl"
    assert f"{inputs_file}: line 4: the payload is stored in a separate blob" in problems
    assert f"{inputs_file}: correlationid two-rows: 2 model_inputs rows but 1 model_outputs rows" in problems
    assert f"{inputs_file}: correlationid lonely have model_inputs but no model_outputs" in problems
    assert "correlationid orphan have model_outputs but no model_inputs" in problems
    assert "collection 'request' is not read" in problems


# --- the collector: sampling, the bounded queue, rotated files -------------------------------------------------


def loaded_model(name="energy", version="3", model_set=None, set_version=None):

    entry = ModelEntry(name, version, Path("."), model_set=model_set, set_version=set_version)
    schema = (Column("timeStamp", "datetime"), Column("precip"), Column("temp"))
    return LoadedModel(entry, None, schema)


def counter(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_sampled_requests_are_written_off_the_request_path_in_rotated_files(tmp_path):

    registry = CollectorRegistry()
    sink = LocalFiles(tmp_path / "c", max_bytes=2_000, host="web/1")
    collector = Collector(sink, 1.0, registry)
    model = loaded_model()
    secret = [(b"authorization", b"Bearer s3cret"), (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]
    for i in range(40):
        collector.offer(f"r{i}", secret, model, [["2017-08-13 06:00", 0.5, float(i)]], [100.0 + i])
    collector.close()
    assert counter(registry, "scoring_collected_records_total") == 40
    files = sorted((tmp_path / "c").rglob("*.jsonl"))
    assert len(files) > 1 and len(files) == len(sink.files)  # rotated by size
    assert all(f.name.startswith(f"web_1-{os.getpid()}-") for f in files)
    assert all(f.stat().st_size <= 2_000 for f in files)
    for file in files:  # <YYYY>/<MM>/<DD>/<HH> of the file's first record
        first = datetime.fromisoformat(json.loads(file.read_text().splitlines()[0])["time"])
        assert file.parent.relative_to(tmp_path / "c").as_posix() == first.strftime("%Y/%m/%d/%H")
    text = b"".join(f.read_bytes() for f in files)
    assert b"s3cret" not in text and b"uthorization" not in text
    collected = read_collected(tmp_path / "c")
    assert collected.problems == []
    frame = collected.frames["energy"]
    assert sorted(frame["request_id"], key=lambda r: int(r[1:])) == [f"r{i}" for i in range(40)]
    assert (frame["prediction"] - frame["temp"]).eq(100.0).all()
    record = json.loads(files[0].read_text().splitlines()[0])
    assert record["traceparent"] == "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    assert record["model_set"] is None and record["columns"] == ["timeStamp", "precip", "temp"]


def test_the_fast_line_encoder_writes_exactly_the_documented_record():
    import gc
    import random

    from ml_service.monitoring.collect import Lines, as_json, traceparent

    lines = Lines()
    models = [loaded_model(), loaded_model("regions/region=r1", "2", "regions", "5")]
    headers = [[], [(b"traceparent", b" 00-" + b"c" * 32 + b"-" + b"d" * 16 + b"-01 ")], [(b"traceparent", b"junk")]]
    rng = random.Random(3)
    for i in range(2_000):
        record = Record(1_795_000_000 + rng.random() * 10_000, f"r\"{i}", headers[i % 3], models[i % 2],
                        [["2017-08-13 06:00", rng.random(), i]], [rng.random() if i % 5 else None])  # fmt: skip
        assert lines(record) == orjson.dumps(as_json(record)) + b"\n"
    assert [traceparent(h) for h in headers] == [None, "00-" + "c" * 32 + "-" + "d" * 16 + "-01", None]
    assert as_json(Record(1_795_000_000.1239, "x", [], models[0], [], []))["time"] == "2026-11-18T11:06:40.123+00:00"
    # a model evicted from the service's cache is not kept alive by the encoder's cache
    evicted = loaded_model("gone")
    lines(Record(1_795_000_000, "x", [], evicted, [["t", 0, 1]], [1.0]))
    entry_id = id(evicted)
    del evicted
    gc.collect()
    assert lines._models[entry_id][0]() is None


def test_a_new_hour_begins_a_new_file_in_its_own_folder(tmp_path):

    sink = LocalFiles(tmp_path, max_bytes=10_000_000, host="h")
    model = loaded_model()
    at = datetime(2026, 12, 1, 22, 59, 59, tzinfo=UTC).timestamp()
    sink.write([Record(at + s, f"r{s}", [], model, [["t", 0, 1]], [1.0]) for s in (0, 0.5, 1, 2)])
    sink.close()
    assert [p.relative_to(tmp_path).as_posix() for p in sink.files] == [
        f"2026/12/01/22/h-{os.getpid()}-0.jsonl",
        f"2026/12/01/23/h-{os.getpid()}-1.jsonl",
    ]
    assert [len(p.read_text().splitlines()) for p in sink.files] == [2, 2]


def test_an_existing_file_is_never_appended_to(tmp_path):

    at = datetime(2026, 12, 1, 22, 0, tzinfo=UTC).timestamp()
    folder = tmp_path / "2026" / "12" / "01" / "22"
    folder.mkdir(parents=True)
    (folder / f"h-{os.getpid()}-0.jsonl").write_text("a previous process's line\n")
    sink = LocalFiles(tmp_path, max_bytes=10_000, host="h")
    sink.write([Record(at, "r", [], loaded_model(), [["t", 0, 1]], [1.0])])
    sink.close()
    assert (folder / f"h-{os.getpid()}-0.jsonl").read_text() == "a previous process's line\n"
    assert sink.files == [folder / f"h-{os.getpid()}-1.jsonl"]


def test_half_the_requests_at_rate_one_half(tmp_path):

    registry = CollectorRegistry()
    collector = Collector(LocalFiles(tmp_path, 10_000_000), 0.5, registry)
    for i in range(2_000):
        collector.offer(f"r{i}", [], loaded_model(), [["t", 0, i]], [float(i)])
    collector.close()
    kept = counter(registry, "scoring_collected_records_total")
    assert 850 <= kept <= 1_150  # binomial(2000, 0.5): mean 1000, sd 22; the margin is over 6 sd
    assert len(read_collected(tmp_path).frames["energy"]) == kept


class BlockedSink:
    """A sink whose first write waits for ``release``: a writer that cannot keep up."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.records: list = []

    def write(self, records) -> None:
        self.entered.set()
        self.release.wait(30)
        self.records += records

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "a blocked sink"


def test_a_full_queue_drops_and_counts_and_never_waits():

    registry = CollectorRegistry()
    sink = BlockedSink()
    collector = Collector(sink, 1.0, registry, max_records=5)
    model = loaded_model()
    collector.offer("first", [], model, [["t", 0, 1]], [1.0])
    assert sink.entered.wait(10)  # the writer holds the first record and is stuck writing it
    started = time.perf_counter()
    for i in range(20):
        collector.offer(f"r{i}", [], model, [["t", 0, 1]], [1.0])
    assert time.perf_counter() - started < 0.5  # 20 offers with a stuck writer: none waited
    assert counter(registry, "scoring_collect_dropped_records_total", reason="queue_full") == 15
    sink.release.set()
    collector.close()
    assert [r.request_id for r in sink.records] == ["first", "r0", "r1", "r2", "r3", "r4"]
    assert counter(registry, "scoring_collected_records_total") == 6
    collector.offer("late", [], model, [["t", 0, 1]], [1.0])
    assert counter(registry, "scoring_collect_dropped_records_total", reason="closed") == 1


def test_write_errors_are_counted_and_the_writer_carries_on(tmp_path):

    (tmp_path / "file").write_text("not a folder")
    registry = CollectorRegistry()
    collector = Collector(LocalFiles(tmp_path / "file" / "c", 1_000), 1.0, registry)
    collector.offer("r", [], loaded_model(), [["t", 0, 1]], [1.0])
    collector.close()
    assert counter(registry, "scoring_collect_dropped_records_total", reason="write_error") == 1
    assert not collector._thread.is_alive()


def test_off_means_nothing_is_constructed(monkeypatch):

    monkeypatch.setenv("SCORING_COLLECT_RATE", "0")
    threads = threading.active_count()
    assert collector_for(load_settings(env_file=None)) is None
    assert threading.active_count() == threads


# --- the real service on 127.0.0.1 ------------------------------------------------------------------------------

KEY = "k3y-never-written"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A scoring package of test models: a single energy model and a model set of two partitions."""

    root = tmp_path_factory.mktemp("collect-package")
    energy = save_single(energy_model(), root / "energy", ENERGY_ROWS[:1])
    regions = build_model_set(root / "regions", ["r1", "r2"], set_name="regions")
    return write_package(root / "ctx", {"energy": energy, "regions": regions})


def traffic(url: str, count: int, key: str | None = KEY) -> dict[str, dict]:
    """``count`` answered requests (POST and GET, single and partition models, some with a traceparent) plus
    refused ones; returns what was answered by request id."""

    auth = {"Authorization": f"Bearer {key}"} if key else {}
    answered = {}
    with httpx.Client(base_url=url, timeout=30, headers=auth) as client:
        for i in range(count):
            model = "energy" if i % 3 else f"regions/region=r{1 + i % 2}"
            rows = [[f"2017-08-13 {h:02d}:00", 0.1 * i, 40.0 + i + h] for h in range(1 + i % 3)]
            headers = {"X-Request-ID": f"req-{i}"}
            if i % 2:
                headers["traceparent"] = f"00-{i:032x}-{i:016x}-01"
            if i % 4 == 3:
                answer = client.get("/score", params={"model_name": model, "data": json.dumps(rows)}, headers=headers)
            else:
                answer = client.post("/score", json={"model_name": model, "data": rows}, headers=headers)
            assert answer.status_code == 200, answer.text
            answered[f"req-{i}"] = {**answer.json(), "rows": rows, "traceparent": headers.get("traceparent")}
        refused = [
            client.post("/score", json={"model_name": "energy", "data": [["2017-08-13 06:00", "x", 1]]}),
            client.post("/score", json={"model_name": "nothing", "data": [[1]]}),
            httpx.post(f"{url}/score", json={"model_name": "energy", "data": [["2017-08-13 06:00", 0, 1]]}),
        ]
        assert [r.status_code for r in refused] == ([422, 404, 401] if key else [422, 404, 200])
    return answered


def check_frames(collected, answered: dict[str, dict], decimals: int | None = None) -> None:
    """Every answered request is in the frames once, with its rows, predictions, versions and row numbers (to
    ``decimals`` places: Azure's files hold what pandas' ``to_json`` writes, 10 decimal places by default)."""
    seen = set()
    for model, frame in collected.frames.items():
        for request_id, rows in frame.groupby("request_id", sort=False):
            sent = answered[request_id]
            assert model == sent["model_name"]
            assert rows["row"].tolist() == list(range(len(sent["rows"])))
            close = (lambda v: v) if decimals is None else (lambda v: pytest.approx(v, rel=0, abs=10**-decimals))
            assert rows[["timeStamp", "precip", "temp"]].values.tolist() == [
                [t, close(p), close(x)] for t, p, x in sent["rows"]
            ]
            assert rows["prediction"].tolist() == close(sent["predictions"])
            assert set(rows["model_version"]) == {sent["model_version"]}
            assert set(rows["set_version"]) == {sent.get("set_version")}
            seen.add(request_id)
    assert seen == set(answered)


@pytest.mark.slow
def test_the_service_collects_every_answered_request_at_rate_one(package, tmp_path):

    folder = tmp_path / "collected"
    env = {**os.environ, "SCORING_COLLECT_RATE": "1", "SCORING_COLLECT_DIR": str(folder), "SCORING_API_KEY": KEY}
    process, url = serve_test_package(package, env, "--workers", "2")
    try:
        answered = traffic(url, 30)
    finally:
        log = stop(process)  # a graceful stop: each worker writes what it still holds
    files = sorted(folder.rglob("*.jsonl"))
    assert files, log
    assert all(len(f.relative_to(folder).parts) == 5 for f in files)  # <YYYY>/<MM>/<DD>/<HH>/<host>-<pid>-<n>
    records = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(records) == 30  # the refused requests (422, 404, 401) are not collected
    by_id = {r["request_id"]: r for r in records}
    for request_id, sent in answered.items():
        record = by_id[request_id]
        assert record["data"] == sent["rows"] and record["predictions"] == sent["predictions"]
        assert record["traceparent"] == sent["traceparent"]
        assert (record["model_set"], record["set_version"]) == (sent.get("model_set"), sent.get("set_version"))
    text = b"".join(f.read_bytes() for f in files)
    assert KEY.encode() not in text and b"uthorization" not in text and b"Bearer" not in text
    collected = read_collected(folder)
    assert collected.problems == []
    assert sorted(collected.frames) == ["energy", "regions/region=r1", "regions/region=r2"]
    check_frames(collected, answered)


@pytest.mark.slow
def test_rate_zero_writes_nothing(package, tmp_path):

    folder = tmp_path / "collected"
    env = {**os.environ, "SCORING_COLLECT_RATE": "0", "SCORING_COLLECT_DIR": str(folder)}
    process, url = serve_test_package(package, env, "--workers", "1")
    try:
        traffic(url, 6, key=None)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        stop(process)
    assert not folder.exists()
    assert "scoring_collected_records" not in metrics


class SidecarStandIn:
    """Stands in for Azure's data collector beside the container (the network edge the package posts to): records
    each POST /modeldata/log it receives. Nothing else of Azure is replaced."""

    def __init__(self) -> None:

        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rows(self, collection: str) -> int:
        return sum(
            len(json.loads(b)) for _, h, b in list(self.posts) if h["ce-type"] == f"azureml.inference.{collection}"
        )

    def as_blob_files(self, root: Path) -> None:
        """What Azure writes from the posts: one event per post in the documented blob shape (Microsoft Learn, "Collect
        production data from models for real-time inferencing", "Store collected data in Blob Storage"); the
        event's attributes are the posts' ce-* headers (the CloudEvents HTTP binding the package uses), its data the
        posted JSON."""
        for i, (_, headers, body) in enumerate(self.posts):
            collection = headers["ce-type"].removeprefix("azureml.inference.")
            moment = datetime.fromtimestamp(int(headers["ce-time"]), UTC)
            event = {
                "specversion": "1.0",
                "id": headers["trace-id"],
                "source": SOURCE,
                "type": headers["ce-type"],
                "datacontenttype": headers["content-type"],
                "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": json.loads(body),
                "correlationid": headers["ce-x-request-id"],
                "xrequestid": headers["ce-x-request-id"],
                "modelversion": headers.get("ce-model-version", "default"),
                "collectdatatype": headers["ce-collect-data-type"],
                "agent": headers["ce-agent"],
            }
            folder = root / "scoring" / "blue" / collection / moment.strftime("%Y/%m/%d/%H")
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / f"inst-{i % 2}.jsonl").open("a") as out:
                out.write(json.dumps(event) + "\n")

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.slow
def test_on_an_azure_deployment_the_service_logs_to_azure_data_collector(package, tmp_path):
    """The service in a container whose deployment has data_collector: azureml-ai-monitoring (the real package)
    finds the configuration Azure mounts and posts to the collector beside the container, here a stand-in."""

    # The file azureml-ai-monitoring reads (AZUREML_MDC_CONFIG_PATH), made from this project's deployment the way
    # azure-ai-ml makes it for a local endpoint, in the cloud run mode (post to the collector, not print).
    deployment = online_endpoint.build_deployment("scoring", "blue", "acr.io/s:t", False)
    mdc = MdcConfigResolver(deployment.data_collector).mdc_config
    config = tmp_path / "mdc.json"
    config.write_text(json.dumps({k: v for k, v in mdc.items() if k != "runMode"}))
    sidecar = SidecarStandIn()
    env = {
        **os.environ,
        "SCORING_COLLECT_RATE": "1",
        "SCORING_COLLECT_DIR": str(tmp_path / "local-files"),
        "SCORING_API_KEY": KEY,
        "AZUREML_MDC_CONFIG_PATH": str(config),
        "AZUREML_MDC_HOST": "127.0.0.1",
        "AZUREML_MDC_PORT": str(sidecar.port),
    }
    process, url = serve_test_package(package, env, "--workers", "1")
    try:
        answered = traffic(url, 12)
        total = sum(len(a["rows"]) for a in answered.values())
        deadline = time.monotonic() + 30
        while sidecar.rows("model_outputs") < total and time.monotonic() < deadline:
            time.sleep(0.1)
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
    finally:
        stop(process)
        sidecar.close()
    assert "scoring_collected_records_total 12.0" in metrics
    assert sidecar.rows("model_inputs") == sidecar.rows("model_outputs") == total
    assert {path for path, _, _ in sidecar.posts} == {"/modeldata/log"}
    assert not (tmp_path / "local-files").exists()
    for _, headers, body in sidecar.posts:
        assert KEY not in body.decode() and KEY not in json.dumps(headers) and "authorization" not in headers
        assert headers["ce-collect-data-type"].endswith("DataFrame")  # pandas 3 names it pandas.DataFrame
    sidecar.as_blob_files(tmp_path / "blob")
    collected = read_collected(tmp_path / "blob")
    assert collected.problems == []
    check_frames(collected, answered, decimals=10)


# --- the online deployment declares Azure's data collector (validated offline) ----------------------------------

# The data_collector section of Azure/azureml-examples cli/endpoints/online/data-collector/workspace-blob-storage/
# workspace-blob-storage-custom2.YAML (custom logging collections, rolling and sampling rates), with this service's
# values: what `az ml online-deployment create -f` would be given.
DOCUMENTED_DATA_COLLECTOR = """
data_collector:
  collections:
    model_inputs:
      enabled: 'True'
    model_outputs:
      enabled: 'True'
  rolling_rate: hour
  sampling_rate: 1.0
"""


@pytest.mark.parametrize("kubernetes", [False, True])
def test_online_deployments_declare_the_data_collector(tmp_path, kubernetes):

    deployment = online_endpoint.build_deployment("scoring", "blue", "myacr.azurecr.io/mlops/scoring:t", kubernetes)
    assert deployment.environment_variables["SCORING_COLLECT_RATE"] == "1.0"
    dumped = json.loads(json.dumps(deployment._to_dict()))
    documented = yaml.safe_load(DOCUMENTED_DATA_COLLECTOR)["data_collector"]
    collections = dumped["data_collector"].pop("collections")
    assert {k: v["enabled"].lower() for k, v in collections.items()} == {
        "model_inputs": "true",
        "model_outputs": "true",
    }
    documented.pop("collections")
    assert dumped["data_collector"] == documented
    # the YAML the SDK writes loads back as the same kind of deployment with the same collector
    (tmp_path / "deployment.yml").write_text(yaml.safe_dump(json.loads(json.dumps(deployment._to_dict()))))
    loaded = load_online_deployment(tmp_path / "deployment.yml")
    assert type(loaded) is type(deployment)
    assert sorted(loaded.data_collector.collections) == ["model_inputs", "model_outputs"]
    # and the documented YAML gives the same REST payload as the object built here
    documented_file = tmp_path / "documented.yml"
    documented_file.write_text(
        yaml.safe_dump({k: v for k, v in dumped.items() if k != "data_collector"}) + DOCUMENTED_DATA_COLLECTOR.lstrip()
    )
    from_docs = load_online_deployment(documented_file)
    rest = deployment._to_rest_object(location="westeurope").properties.data_collector.as_dict()
    assert rest == from_docs._to_rest_object(location="westeurope").properties.data_collector.as_dict()
    assert rest == {
        "collections": {
            "model_inputs": {"dataCollectionMode": "enabled", "samplingRate": 1.0},
            "model_outputs": {"dataCollectionMode": "enabled", "samplingRate": 1.0},
        },
        "rollingRate": "hour",
    }


def test_collect_rate_zero_declares_no_collector_and_a_bad_rate_is_refused():

    deployment = online_endpoint.build_deployment("scoring", "blue", "acr.io/s:t", False, collect_rate=0)
    assert deployment.data_collector is None and "SCORING_COLLECT_RATE" not in deployment.environment_variables
    half = online_endpoint.build_deployment("scoring", "blue", "acr.io/s:t", False, collect_rate=0.25)
    assert half.environment_variables["SCORING_COLLECT_RATE"] == "0.25"
    assert half.data_collector.sampling_rate == 1.0  # the service samples whole requests, Azure keeps what it gets
    with pytest.raises(common.DeployError, match="--collect-rate 1.5 is not between 0"):
        online_endpoint.build_deployment("scoring", "blue", "acr.io/s:t", False, collect_rate=1.5)


def test_the_deployments_collector_config_enables_the_services_collections(tmp_path, monkeypatch, capsys):
    """azure-ai-ml's own local endpoints turn a deployment's data_collector into the file the container reads
    (AZUREML_MDC_CONFIG_PATH, in run mode "local": the package prints instead of posting). With the file made from
    this project's deployment, the service's adapter finds both its collections enabled and logs to them."""

    deployment = online_endpoint.build_deployment("scoring", "blue", "acr.io/s:t", False)
    resolver = MdcConfigResolver(deployment.data_collector)
    resolver.write_file(str(tmp_path))
    assert set(resolver.environment_variables) == {"AZUREML_MDC_CONFIG_PATH"}
    monkeypatch.setenv("AZUREML_MDC_CONFIG_PATH", str(tmp_path / resolver.local_config_name))
    assert azure_configured(os.environ)
    sink = AzureDataCollector()
    try:
        model = loaded_model("regions/region=r1", "2", "regions", "5")
        sink.write([Record(time.time(), "req-7", [], model, [["2017-08-13 06:00", 0.5, 41.0]], [12.5])])
    finally:
        sink.close()  # flushes the package's queue
    lines = [line for line in capsys.readouterr().out.splitlines() if " | req-7 | " in line]
    by_collection = {line.split(" | ")[-3]: json.loads(line.split(" | ")[-1]) for line in lines}
    assert by_collection["model_inputs"] == [
        {"timeStamp": "2017-08-13 06:00", "precip": 0.5, "temp": 41.0, "correlationid": "req-7"}
    ]
    assert by_collection["model_outputs"] == [
        {
            "correlationid": "req-7",
            "model_name": "regions/region=r1",
            "model_version": "2",
            "model_set": "regions",
            "set_version": "5",
            "prediction": 12.5,
        }
    ]


def test_what_azures_client_refuses_is_counted_not_lost_silently(monkeypatch):
    """azureml-ai-monitoring's own queue is bounded too: set to 2 events with its sender off (its documented
    legacy variables), the second model's frames are refused; they are counted as dropped, the first are not."""
    monkeypatch.setenv("AZUREML_MDC_ENABLED", "true")
    monkeypatch.setenv("AZUREML_MDC_QUEUE_CAPACITY", "2")
    monkeypatch.setenv("AZUREML_MDC_WORKER_DISABLED", "true")
    registry = CollectorRegistry()
    collector = Collector(AzureDataCollector(), 1.0, registry)
    other = LoadedModel(ModelEntry("shop", "1", Path(".")), None, (Column("x"),))
    collector.offer("a", [], loaded_model(), [["2017-08-13 06:00", 0.5, 41.0]], [1.0])
    collector.offer("b", [], other, [[1.0]], [2.0])
    collector.close()
    assert counter(registry, "scoring_collected_records_total") == 1
    assert counter(registry, "scoring_collect_dropped_records_total", reason="write_error") == 1
