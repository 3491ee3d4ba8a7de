"""Inference data collection: the collected-file reader (local and Azure data-collector formats, bad files)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ml_service.monitoring.collected import META_COLUMNS, read_collected

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
