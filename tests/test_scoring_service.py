"""The scoring API through FastAPI's TestClient: every endpoint, bad input, auth, the LRU cache, logging."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ml_service.scoring import app as app_module
from ml_service.scoring.app import LOGGER_NAME, create_app
from ml_service.scoring.model_store import CatalogueError, ModelStore, entries_for_folder
from ml_service.util.env_variables import Settings
from tests.test_scoring_support import (
    DIABETES_ROWS,
    ENERGY_ROWS,
    SHOP_ALLOWED,
    SHOP_ROWS,
    SHOP_TYPES,
    build_model_set,
    diabetes_model,
    energy_model,
    register_standard_models,
    save_single,
    shop_model,
)

SET = "nyc_energy_regions_model"
SHOP = "shop_model"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Registered versions (MLflow model folders): two single models, a model set of three, a model with text
    and boolean inputs."""
    root = tmp_path_factory.mktemp("models")
    return {
        "diabetes_model": save_single(diabetes_model(), root / "diabetes_model", DIABETES_ROWS[:1]),
        "nyc_energy_model": save_single(energy_model(), root / "nyc_energy_model"),
        SET: build_model_set(root / SET, ["r0001", "r0002", "r0003"]),
        SHOP: save_single(shop_model(), root / SHOP, SHOP_ROWS[:1], input_types=SHOP_TYPES, allowed=SHOP_ALLOWED),
    }


def make_client(folders, cache_size=8, **settings) -> tuple[TestClient, ModelStore]:
    entries = []
    for i, (name, folder) in enumerate(folders.items()):
        entries += entries_for_folder(name, str(i + 1), folder)
    store = ModelStore(entries, cache_size)
    return TestClient(create_app(store, Settings(**settings))), store


@pytest.fixture(scope="module")
def client(folders):
    return make_client(folders)[0]


def test_issue_shapes_get_and_post(client):
    energy = client.get("/score", params={"model_name": "nyc_energy_model", "data": json.dumps(ENERGY_ROWS)})
    assert energy.status_code == 200, energy.text
    body = energy.json()
    assert body["model_name"] == "nyc_energy_model" and body["model_version"] == "2"
    assert len(body["predictions"]) == 2 and all(isinstance(p, float) for p in body["predictions"])
    url = "/score?model_name=diabetes_model&data=[[1,2,3,4,5,6,7,8,9,0],[56,33,11,88,0,43,6,8,1,68]]"
    diabetes = client.get(url)
    assert diabetes.status_code == 200 and len(diabetes.json()["predictions"]) == 2
    expected = diabetes_model().predict(pd.DataFrame(DIABETES_ROWS, columns=diabetes_model().feature_names_in_))
    assert diabetes.json()["predictions"] == pytest.approx(list(expected))
    post = client.post("/score", json={"model_name": "nyc_energy_model", "data": [["2017-08-13 06:00", 0, 50]]})
    assert post.status_code == 200 and len(post.json()["predictions"]) == 1


def test_partition_models_answer_with_their_versions(client):
    response = client.post("/score", json={"model_name": f"{SET}/region=r0002", "data": ENERGY_ROWS})
    body = response.json()
    assert response.status_code == 200, body
    assert (body["model_set"], body["set_version"], body["model_version"]) == (SET, "3", "1")
    other = client.post("/score", json={"model_name": f"{SET}/region=r0001", "data": ENERGY_ROWS}).json()
    assert other["predictions"] != body["predictions"]  # different partitions, different models


def test_models_list_filter_paginate_and_detail(client):
    everything = client.get("/models")
    assert everything.headers["x-total-count"] == "6"
    names = [m["name"] for m in everything.json()]
    assert names == sorted(names) and "diabetes_model" in names and f"{SET}/region=r0003" in names
    assert all({"name", "version", "metrics"} <= set(m) for m in everything.json())
    page = client.get("/models", params={"prefix": f"{SET}/", "offset": 1, "limit": 1})
    assert page.headers["x-total-count"] == "3" and [m["name"] for m in page.json()] == [f"{SET}/region=r0002"]
    detail = client.get(f"/models/{SET}/region=r0001").json()
    assert detail["input_columns"] == ["timeStamp", "precip", "temp"] and detail["sample_input"]
    assert detail["metrics"] == {"mape": 0.1}
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models", params={"limit": 0}).status_code == 422


def test_health_metrics_and_docs(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["ready"] and health.json()["live"]
    client.get("/score", params={"model_name": "diabetes_model", "data": json.dumps(DIABETES_ROWS)})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "scoring_requests_total" in metrics.text
    assert 'scoring_predictions_total{model="diabetes_model"}' in metrics.text
    # the CPU time of predict calls, beside the number of requests each answered (where a request's time goes)
    cpu = [line for line in metrics.text.splitlines() if line.startswith("scoring_batch_cpu_seconds_total ")]
    assert len(cpu) == 1 and float(cpu[0].split()[1]) > 0
    assert "scoring_batch_requests_count " in metrics.text
    assert client.get("/openapi.json").json()["paths"]["/score"]["post"]["requestBody"]
    assert client.get("/docs").status_code == 200


def test_empty_store_is_live_but_not_ready():
    client = TestClient(create_app(ModelStore([], 2), Settings()))
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["live"] and not response.json()["ready"]


BAD_POSTS = [
    (b'{"model_name": "diabetes_model", "data": [[1,2', 400, "body"),
    (b"", 400, "body"),
    (b"[1, 2]", 422, "body"),
    (b'{"data": [[1,2,3,4,5,6,7,8,9,0]]}', 422, "model_name"),
    (b'{"model_name": 5, "data": [[1,2,3,4,5,6,7,8,9,0]]}', 422, "model_name"),
    (b'{"model_name": "diabetes_model"}', 422, "data"),
    (b'{"model_name": "diabetes_model", "data": []}', 422, "data"),
    (b'{"model_name": "diabetes_model", "data": "rows"}', 422, "data"),
    (b'{"model_name": "diabetes_model", "data": [5]}', 422, "data[0]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3]]}', 422, "data[0]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,0],[1,2]]}', 422, "data[1]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,"x"]]}', 422, "data[0][9]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,true]]}', 422, "data[0][9]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,null]]}', 422, "data[0][9]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,NaN]]}', 422, "data[0][9]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,Infinity]]}', 422, "data[0][9]"),
    (b'{"model_name": "diabetes_model", "data": [[1,2,3,4,5,6,7,8,9,1e999]]}', 422, "data[0][9]"),
    (b'{"model_name": "nyc_energy_model", "data": [["not a date", 0, 50]]}', 422, "data[0][0]"),
    (b'{"model_name": "nyc_energy_model", "data": [[20170813, 0, 50]]}', 422, "data[0][0]"),
    (b'{"model_name": "nyc_energy_model", "data": [["2017-08-13 06:00", "0", 50]]}', 422, "data[0][1]"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_POSTS)
def test_bad_posts_name_the_field(client, body, status, field):
    response = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["detail"]


def test_bad_gets(client):
    cases = [
        ({"model_name": "diabetes_model"}, 422, "data"),
        ({"data": "[[1]]"}, 422, "model_name"),
        ({"model_name": "diabetes_model", "data": "[[1,2"}, 400, "data"),
        ({"model_name": "diabetes_model", "data": "[[1,2,3]]"}, 422, "data[0]"),
    ]
    for params, status, field in cases:
        response = client.get("/score", params=params)
        assert (response.status_code, response.json()["field"]) == (status, field), response.text


def test_unknown_model_is_404_and_says_how_to_list(client):
    for name in ("nope", f"{SET}/region=r9999", SET):
        response = client.post("/score", json={"model_name": name, "data": [[1]]})
        assert response.status_code == 404
        assert "GET /models" in response.json()["detail"] and response.json()["models_url"] == "/models"
    assert client.get("/nowhere").status_code == 404


def test_body_over_the_limit_is_413(folders):
    client, _ = make_client(folders, scoring_max_body_bytes=200)
    rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 0]] * 20
    assert client.post("/score", json={"model_name": "diabetes_model", "data": rows}).status_code == 413

    def chunks():  # no Content-Length: the streamed body is counted
        yield b'{"model_name": "diabetes_model", "data": ['
        for _ in range(20):
            yield b"[1,2,3,4,5,6,7,8,9,0],"
        yield b"[1,2,3,4,5,6,7,8,9,0]]}"

    response = client.post("/score", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["field"] == "body"
    long_query = json.dumps(rows)
    assert client.get("/score", params={"model_name": "diabetes_model", "data": long_query}).status_code == 413
    assert client.post("/score", json={"model_name": "diabetes_model", "data": rows[:1]}).status_code == 200


def test_key_auth_protects_score_not_health(folders):
    client, _ = make_client(folders, scoring_api_key="s3cret")
    payload = {"model_name": "diabetes_model", "data": DIABETES_ROWS}
    assert client.post("/score", json=payload).status_code == 401
    assert client.post("/score", json=payload, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/score", json=payload, headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.post("/score", json=payload, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/score", params={"model_name": "x", "data": "[]"}).status_code == 401
    assert client.get("/models").status_code == 401
    assert client.get("/health").status_code == 200
    # /metrics names the scored models, so it is protected like /models (a scraper sends the bearer token)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_no_key_means_open(client):
    assert client.post("/score", json={"model_name": "diabetes_model", "data": DIABETES_ROWS}).status_code == 200


def test_lru_evicts_least_recently_used_and_reloads(folders):
    loads = []
    client, store = make_client(folders, cache_size=2)
    original = store._loader
    store._loader = lambda folder, hashes: loads.append(folder) or original(folder, hashes)
    a, b, c = "diabetes_model", "nyc_energy_model", f"{SET}/region=r0001"
    rows = {a: DIABETES_ROWS, b: ENERGY_ROWS, c: ENERGY_ROWS}

    def score(name):
        assert client.post("/score", json={"model_name": name, "data": rows[name]}).status_code == 200

    for name in (a, b, a, c):  # c evicts b (a was used more recently)
        score(name)
    assert sorted(store.loaded) == sorted([a, c]) and store.evictions == 1
    score(b)  # reloaded, evicting a
    assert loads == [store.entry(name).folder for name in (a, b, c, b)] and sorted(store.loaded) == sorted([b, c])
    assert client.get("/health").json()["loaded"] == 2


def test_one_json_log_line_per_request_with_ids(client, caplog):
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        response = client.post(
            "/score",
            json={"model_name": f"{SET}/region=r0001", "data": ENERGY_ROWS},
            headers={"x-request-id": "req-42", "traceparent": traceparent},
        )
        client.get("/score", params={"model_name": "nope", "data": "[[1]]"})
    assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]
    assert len(lines) == 2
    first = lines[0]
    assert first["request_id"] == "req-42" and first["traceparent"] == traceparent
    assert (first["model"], first["model_version"], first["set_version"]) == (f"{SET}/region=r0001", "1", "3")
    assert first["predictions"] == 2 and first["status"] == 200 and first["duration_ms"] > 0
    assert lines[1]["status"] == 404 and len(lines[1]["request_id"]) == 32 and "traceparent" not in lines[1]


def test_application_insights_only_when_configured(folders, monkeypatch):
    calls = []
    monkeypatch.setattr(app_module, "_configure_azure_monitor", calls.append)
    make_client(folders)
    assert calls == []
    make_client(
        folders, applicationinsights_connection_string="InstrumentationKey=00000000-0000-0000-0000-000000000000"
    )
    assert calls == ["InstrumentationKey=00000000-0000-0000-0000-000000000000"]


def test_broken_model_never_takes_the_service_down(folders, tmp_path):
    broken = save_single(diabetes_model(), tmp_path / "broken")
    (entry,) = entries_for_folder("broken", "1", broken)
    (entry.folder / "model.pkl").write_bytes(b"not a pickle")
    entries = [entry, *entries_for_folder("diabetes_model", "1", folders["diabetes_model"])]
    client = TestClient(create_app(ModelStore(entries, 2), Settings()), raise_server_exceptions=False)
    for _ in range(2):  # refused at once the second time, with the same reason
        response = client.post("/score", json={"model_name": "broken", "data": DIABETES_ROWS})
        assert response.status_code == 503 and "cannot be loaded" in response.json()["detail"], response.text
        # loaded straight from a registered folder: checked against the sha256 recorded at registration
        assert "sha256" in response.json()["detail"] and response.json()["field"] == "model_name"
    assert client.post("/score", json={"model_name": "diabetes_model", "data": DIABETES_ROWS}).status_code == 200
    health = client.get("/health").json()
    assert health["ready"] and health["unavailable"] == 1 and health["status"].startswith("degraded")
    listed = {m["name"]: m.get("unavailable") for m in client.get("/models").json()}
    assert "sha256" in listed["broken"] and listed["diabetes_model"] is None


def test_a_folder_that_is_not_a_registered_model_is_refused(folders, tmp_path):
    with pytest.raises(CatalogueError, match="not a servable registered model"):
        entries_for_folder("diabetes_model", "1", tmp_path)
    with pytest.raises(CatalogueError, match="registered as 'other'"):
        entries_for_folder("other", "1", folders["diabetes_model"])


# --- text and boolean inputs: types from the MLflow signature, allowed values from the manifest ----------------


def shop_predictions(rows) -> list[float]:
    frame = pd.DataFrame(rows, columns=list(SHOP_TYPES))
    return list(shop_model().predict(frame))


def test_category_string_and_boolean_inputs_answer(client):
    rows = [["red", "any text", True, 1.5], ["green", "", False, 1.5], ["blue", "x" * 200, True, 9.0]]
    post = client.post("/score", json={"model_name": SHOP, "data": rows})
    assert post.status_code == 200, post.text
    assert post.json()["predictions"] == pytest.approx(shop_predictions(rows))
    get = client.get("/score", params={"model_name": SHOP, "data": json.dumps(rows)})
    assert get.status_code == 200 and get.json()["predictions"] == post.json()["predictions"]
    # the model sees the values: the colour and the promotion change the answer as they did in training
    red_promo, green = post.json()["predictions"][:2]
    assert red_promo - green == pytest.approx(5 - 3, abs=0.05)  # same x; promotion +5, green +3
    detail = client.get(f"/models/{SHOP}").json()
    assert detail["input_columns"] == list(SHOP_TYPES)
    colour = {"type": "category", "values": SHOP_ALLOWED["colour"]}  # allowed values from the manifest
    assert detail["input_schema"] == {"colour": colour, "note": "string", "promo": "boolean", "x": "number"}


BAD_SHOP_ROWS = [
    (["purple", "t", True, 1.0], "data[0][0]", "'colour' must be one of [red, green, blue], got 'purple'"),
    (["Red", "t", True, 1.0], "data[0][0]", "'colour' must be one of [red, green, blue], got 'Red'"),
    ([5, "t", True, 1.0], "data[0][0]", "'colour' must be a string, got 5"),
    ([None, "t", True, 1.0], "data[0][0]", "'colour' must be a string, got None"),
    ([["red"], "t", True, 1.0], "data[0][0]", "'colour' must be a string"),
    (["red", 7, True, 1.0], "data[0][1]", "'note' must be a string, got 7"),
    (["red", "t", "true", 1.0], "data[0][2]", "'promo' must be true or false, got 'true'"),
    (["red", "t", 1, 1.0], "data[0][2]", "'promo' must be true or false, got 1"),
    (["red", "t", None, 1.0], "data[0][2]", "'promo' must be true or false"),
    (["red", "t", True, "1.0"], "data[0][3]", "'x' must be a number"),
    (["red", "t", True, False], "data[0][3]", "'x' must be a number"),
]


@pytest.mark.parametrize(("row", "field", "detail"), BAD_SHOP_ROWS)
def test_bad_text_and_boolean_values_are_422_naming_the_column(client, row, field, detail):
    good = ["green", "t", False, 2.0]
    response = client.post("/score", json={"model_name": SHOP, "data": [good, row]})
    assert response.status_code == 422, response.text
    body = response.json()
    field = field.replace("data[0]", "data[1]")  # the second row is the bad one
    assert body["field"] == field and body["detail"].startswith(f"{field}: column ") and detail in body["detail"]
    get = client.get("/score", params={"model_name": SHOP, "data": json.dumps([row])})
    assert get.status_code == 422 and detail in get.json()["detail"]


def test_store_from_registry_serves_production_versions(settings, tmp_path):
    register_standard_models(settings, tmp_path)
    store = ModelStore.from_registry(settings)
    assert len(store) == 5 and store.loaded == []
    assert store.entry("diabetes_model").metrics == {"rmse": 1.5}
    client = TestClient(create_app(store, settings))
    response = client.post("/score", json={"model_name": f"{SET}/region=r0003", "data": ENERGY_ROWS})
    assert response.status_code == 200 and response.json()["set_version"] == "1"
    again = ModelStore.from_registry(settings)  # already downloaded: reused
    assert again.entry("nyc_energy_model").folder == store.entry("nyc_energy_model").folder
