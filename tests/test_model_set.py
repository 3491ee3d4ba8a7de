"""The one partition-key codec and the data folder of a registered model (manifest and model files)."""

from __future__ import annotations

import json

import pytest

from ml_service.registry.mlops_pyfunc_model import ModelKeyError, RegisteredModel, key_folder
from ml_service.registry.model_set import (
    ModelSetError,
    model_key,
    parse_model_key,
    partition_folder,
    read_manifest,
    served_name,
    write_manifest,
)
from ml_service.util.files import folder_sha256

AWKWARD = ["a/b", "c,d", "e=f", "g h", "50%", "üñï 東京", "..", "x!y", "plain-1.2_3~"]


@pytest.mark.parametrize("value", AWKWARD)
def test_model_key_round_trip(value):
    key = model_key({"store": value, "region": "north"})
    assert parse_model_key(key) == {"store": value, "region": "north"}
    assert "/" not in key and key.count(",") == 1 and key.count("=") == 2  # one folder, one URL segment
    folder = key_folder(key)
    assert folder.startswith("models/") and "%" not in folder and folder.count("/") == 1  # MLflow decodes "%"


def test_model_key_form_and_refusals():
    assert model_key({"region": "r0001"}) == "region=r0001"
    assert model_key({"a": 1, "b": "x"}) == "a=1,b=x"
    assert model_key({"store": "a/b"}) == "store=a%2Fb"
    assert len({key_folder(model_key({"s": v})) for v in AWKWARD}) == len(AWKWARD)  # distinct folders
    for bad in ({"region": ""}, {"": "x"}, {}):
        with pytest.raises(ModelKeyError):
            model_key(bad)
    for bad in ("region", "region=", "=x", "a=b/c", "a=b c"):
        with pytest.raises(ModelKeyError, match="is not column=value"):
            parse_model_key(bad)
    assert key_folder("") == "models/model" and served_name("m", "") == "m" and served_name("m", "k=v") == "m/k=v"


def models_in(folder, keys):
    for key in keys:
        partition_folder(folder, key).mkdir(parents=True)
        (partition_folder(folder, key) / "model.pkl").write_bytes(key.encode())
    return {key: {"version": "1", "metrics": {"mae": 0.5}} for key in keys}


def manifest_args(models):
    return dict(model_name="m", use_case="u", input_types={"colour": "category", "x": "number"}, models=models)


def test_write_and_read_manifest(tmp_path):
    keys = [model_key({"store": v}) for v in ("a/b", "s1")]
    models = models_in(tmp_path, keys)
    for key in keys:
        models[key]["sha256"] = folder_sha256(partition_folder(tmp_path, key))
    written = write_manifest(tmp_path, partition_columns=["store"], allowed={"colour": ["r"]}, **manifest_args(models))
    first = (tmp_path / "manifest.json").read_bytes()
    write_manifest(tmp_path, partition_columns=["store"], allowed={"colour": ["r"]}, **manifest_args(models))
    assert (tmp_path / "manifest.json").read_bytes() == first  # same inputs, same bytes
    manifest = read_manifest(tmp_path)
    assert manifest == json.loads(first) == json.loads(json.dumps(written))
    assert manifest["kind"] == "model_set" and manifest["input_columns"] == ["colour", "x"]
    assert manifest["models"]["store=a%2Fb"]["path"] == "models/store=a!2Fb"
    assert set(manifest["models"]["store=s1"]["sha256"]) == {"model.pkl"}


def test_manifest_refusals(tmp_path):
    models = models_in(tmp_path, ["store=s1"])
    with pytest.raises(ModelSetError, match="is missing"):
        write_manifest(tmp_path, partition_columns=["store"], **manifest_args({"store=s9": {}}))
    with pytest.raises(ModelSetError, match="does not name the partition columns"):
        write_manifest(tmp_path, partition_columns=["region"], **manifest_args(models))
    with pytest.raises(ModelSetError, match="unknown manifest fields"):
        write_manifest(tmp_path, partition_columns=["store"], **manifest_args({"store=s1": {"colour": 1}}))
    with pytest.raises(ModelSetError, match="partition models need partition columns"):
        write_manifest(tmp_path, partition_columns=[], **manifest_args(models))
    with pytest.raises(ModelSetError, match="no models"):
        write_manifest(tmp_path, partition_columns=["store"], **manifest_args({}))


def test_read_manifest_refuses_escaping_paths_and_other_files(tmp_path):
    base = {"kind": "model_set", "model_name": "m", "input_columns": [], "input_types": {}, "partition_columns": []}
    (tmp_path / "manifest.json").write_text(json.dumps({**base, "models": {"k=v": {"path": "../../etc"}}}))
    with pytest.raises(ModelSetError, match="inside"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**base, "kind": "zip", "models": {}}))
    with pytest.raises(ModelSetError, match="'kind' is not one of"):
        read_manifest(tmp_path)
    with pytest.raises(ModelSetError, match="not found"):
        read_manifest(tmp_path / "nowhere")


def test_the_loader_opens_only_the_models_asked_for(tmp_path):
    """The manifest is the catalogue: a model set is opened by reading one file; a partition's model is
    unpickled when a row needs it (here the other model files are not even pickles)."""
    import pickle

    keys = [model_key({"store": v}) for v in ("a/b", "c", "d")]
    models = models_in(tmp_path, keys)
    with (partition_folder(tmp_path, keys[0]) / "model.pkl").open("wb") as handle:
        pickle.dump(Constant(7.0), handle)
    write_manifest(tmp_path, partition_columns=["store"], **manifest_args(models))
    loaded = RegisteredModel(tmp_path)
    assert list(loaded.predict({"store": ["a/b", "a/b"], "colour": ["r", "g"], "x": [1.0, 2.0]})) == [7.0, 7.0]
    with pytest.raises(KeyError, match="no model for partition 'store=zzz'"):
        loaded.predict({"store": ["zzz"], "colour": ["r"], "x": [1.0]})


class Constant:
    def __init__(self, value: float):
        self.value = value

    def predict(self, frame):
        return [self.value] * len(frame)
