"""The model-set writer/reader: keys, manifest contents and refusals, and a 10,000-model set catalogued fast."""

from __future__ import annotations

import json
import time

import pytest

from ml_service.registry.model_set import (
    ModelSetError,
    is_model_set,
    model_key,
    parse_model_key,
    partition_folder,
    read_manifest,
    write_model_set,
)
from ml_service.scoring.model_store import ModelStore, entries_for_folder


def test_model_key_round_trip_and_refusals():
    assert model_key({"region": "r0001"}) == "region=r0001"
    assert model_key({"a": 1, "b": "x"}) == "a=1,b=x"
    assert parse_model_key("a=1,b=x") == {"a": "1", "b": "x"}
    for bad in ({"region": "a/b"}, {"region": ""}, {"re=gion": "x"}, {"region": ".."}, {}):
        with pytest.raises(ModelSetError):
            model_key(bad)


def test_write_and_read_manifest(tmp_path):
    for key in ("region=r1", "region=r2"):
        partition_folder(tmp_path, key).mkdir(parents=True)
        (partition_folder(tmp_path, key) / "model.joblib").write_bytes(b"x")
    models = {"region=r2": {"version": "2", "metrics": {"mape": 0.2}}, "region=r1": {"version": "1"}}
    args = dict(model_name="m", input_columns=["t", "x"], partition_columns=["region"], models=models)
    path = write_model_set(tmp_path, set_version="3", **args)
    first = path.read_bytes()
    write_model_set(tmp_path, set_version="3", **args)
    assert path.read_bytes() == first  # deterministic
    manifest = read_manifest(tmp_path)
    assert is_model_set(tmp_path)
    assert manifest["kind"] == "model_set" and manifest["set_version"] == "3"
    assert manifest["models"]["region=r1"]["path"] == "models/region=r1"
    assert manifest["models"]["region=r2"]["metrics"] == {"mape": 0.2}
    with pytest.raises(ModelSetError, match="missing"):
        write_model_set(tmp_path, **{**args, "models": {"region=r9": {}}})
    with pytest.raises(ModelSetError, match="partition columns"):
        write_model_set(tmp_path, **{**args, "models": {"zone=r1": {}}}, check_files=False)
    with pytest.raises(ModelSetError, match="unknown manifest fields"):
        write_model_set(tmp_path, **{**args, "models": {"region=r1": {"colour": 1}}})


def test_read_manifest_refuses_escaping_paths(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "kind": "model_set",
                "model_name": "m",
                "input_columns": [],
                "partition_columns": [],
                "models": {"k=v": {"path": "../../etc"}},
            }
        )
    )
    with pytest.raises(ModelSetError, match="inside"):
        read_manifest(tmp_path)


def test_ten_thousand_partition_models_are_catalogued_in_seconds(tmp_path):
    models = {model_key({"region": f"r{i:05d}"}): {"version": "1", "metrics": {"mape": i / 1e4}} for i in range(10_000)}
    write_model_set(
        tmp_path,
        model_name="big",
        input_columns=["x"],
        partition_columns=["region"],
        models=models,
        check_files=False,
    )
    started = time.perf_counter()
    store = ModelStore(entries_for_folder("big", "7", tmp_path), cache_size=4)
    elapsed = time.perf_counter() - started
    assert len(store) == 10_000 and store.loaded == []
    assert store.entry("big/region=r00042").set_version == "7"
    assert len(store.names("big/region=r000")) == 100
    assert elapsed < 3.0, elapsed
