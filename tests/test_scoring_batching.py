"""Micro-batching never changes a prediction: each caller's answer equals unbatched predict, row by row.

One stand-in per kind of sample model (scikit-learn only, so the platform's tests need no use case): a Ridge fed
NumPy arrays (diabetes_regression), a scaler + ElasticNet pipeline (FLAML's choice for diabetes), an ExtraTrees
forest on calendar features of a time stamp (nyc_energy_model), a ridge partition pipeline (the model set), and a
categorical input one-hot encoded from the schema's allowed values. The packaged models themselves are checked
the same way by bench/bench_scoring.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import time
import weakref

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from ml_service.scoring.batching import (
    Batcher,
    ModelRejected,
    batch_invariant,
    predict,
    predict_batch,
    probe_inputs,
    to_json_values,
)
from ml_service.scoring.fast_predict import verified_fast_predict
from ml_service.scoring.inputs import InputError, accepts_arrays, checked_rows_to_input, schema_from_metadata
from ml_service.scoring.model_store import LoadedModel, ModelEntry
from tests.test_scoring_support import DIABETES_COLUMNS, diabetes_model, energy_model

ENERGY = {"input_columns": ["timeStamp", "precip", "temp"], "input_schema": {"timeStamp": "datetime"}}
COLORS = ["red", "green", "blue"]


def calendar(x: pd.DataFrame) -> np.ndarray:
    stamps = pd.to_datetime(x["timeStamp"])
    return np.column_stack([stamps.dt.hour, stamps.dt.day_of_week, x["precip"], x["temp"]]).astype(float)


def loaded_model(model, metadata, sample) -> LoadedModel:
    schema = schema_from_metadata(metadata)
    entry = ModelEntry(name="m", version="1", folder=None)  # type: ignore[arg-type]
    arrays = accepts_arrays(model, schema, sample)
    fast = verified_fast_predict(model, probe_inputs(schema, sample, arrays))  # as the model store does
    return LoadedModel(entry, model, schema, arrays, batch_invariant(model, schema, sample, arrays, fast), fast)


def energy_rows(n: int, rng: random.Random) -> list[list]:
    return [
        [
            f"2017-08-{rng.randint(1, 28)} {rng.randint(0, 23)}:{rng.choice(['00', '30'])}",
            rng.random(),
            40 + rng.random() * 50,
        ]
        for _ in range(n)
    ]


def sample_models() -> dict[str, tuple[LoadedModel, list[list]]]:
    rng = random.Random(3)
    numbers = [[rng.uniform(0, 100) for _ in DIABETES_COLUMNS] for _ in range(60)]
    frame = pd.DataFrame(numbers, columns=DIABETES_COLUMNS)
    target = frame.to_numpy() @ np.linspace(-1, 1, 10)
    diabetes = {"input_columns": DIABETES_COLUMNS}
    elastic = Pipeline([("scale", StandardScaler()), ("model", ElasticNet(alpha=0.1))]).fit(frame, target)
    train = pd.DataFrame(energy_rows(300, rng), columns=ENERGY["input_columns"])
    train["timeStamp"] = pd.to_datetime(train["timeStamp"])
    y = train["temp"].to_numpy() * 30 + pd.to_datetime(train["timeStamp"]).dt.hour.to_numpy() * 10
    forest = Pipeline(
        [("features", FunctionTransformer(calendar)), ("model", ExtraTreesRegressor(n_estimators=20, random_state=0))]
    ).fit(train, y)
    colored = {"input_columns": ["color", "x"], "input_schema": {"color": {"type": "category", "values": COLORS}}}
    color_rows = [[rng.choice(COLORS), rng.random()] for _ in range(60)]
    color_frame = checked_rows_to_input(schema_from_metadata(colored), color_rows, False)
    encode = ColumnTransformer([("color", OneHotEncoder(), ["color"])], remainder="passthrough")
    by_color = Pipeline([("encode", encode), ("model", Ridge())]).fit(color_frame, np.arange(60.0))
    return {
        "ridge (array path)": (loaded_model(diabetes_model(), diabetes, numbers[:2]), numbers),
        "scaler + elastic net": (loaded_model(elastic, diabetes, numbers[:2]), numbers),
        "extra trees on calendar features": (loaded_model(forest, ENERGY, energy_rows(2, rng)), energy_rows(60, rng)),
        "ridge partition pipeline": (
            loaded_model(energy_model(seed=2), ENERGY, energy_rows(1, rng)),
            energy_rows(60, rng),
        ),
        "categorical input": (loaded_model(by_color, colored, color_rows[:2]), color_rows),
    }


MODELS = sample_models()


def unbatched(loaded: LoadedModel, row: list):
    """The model's own predict of one row (never its fast path: that is what is checked against it)."""
    own = dataclasses.replace(loaded, fast=None)
    return to_json_values(predict(own, checked_rows_to_input(loaded.schema, [row], loaded.array_input)))[0]


def split(rows: list, sizes: list[int]) -> list[list]:
    out, start = [], 0
    for size in sizes:
        out.append(rows[start : start + size])
        start += size
    return [part for part in out if part]


@pytest.mark.parametrize("kind", list(MODELS))
def test_batched_answers_equal_unbatched_predict_row_by_row(kind):
    loaded, rows = MODELS[kind]
    expected = [unbatched(loaded, row) for row in rows]
    requests = split(rows, [1, 3, 1, 7, 2, 1, 5, 1, 1, 9, 4, 1, 6, 2, 1, 11, 4])

    async def callers():
        batcher = Batcher(max_rows=16)  # small: mixed sizes split across several batches

        async def caller(i: int, part: list):
            await asyncio.sleep(0 if i % 3 else 0.001)  # some arrive while a batch runs
            return await batcher.submit(loaded, part)

        answers = await asyncio.gather(*(caller(i, part) for i, part in enumerate(requests)))
        batcher.close()
        return answers, batcher

    answers, batcher = asyncio.run(callers())
    assert batcher.requests == len(requests) and batcher.batches < len(requests)  # batches did form
    if loaded.batch_invariant:  # batched across requests: every row as if predicted alone
        assert [value for answer in answers for value in answer] == expected
    else:  # one predict per request (a model whose arithmetic depends on the batch): exactly the unbatched answer
        assert answers == [
            to_json_values(predict(loaded, checked_rows_to_input(loaded.schema, part, loaded.array_input)))
            for part in requests
        ]
        assert [a[0] for a, part in zip(answers, requests, strict=True) if len(part) == 1] == [
            expected[rows.index(part[0])] for part in requests if len(part) == 1
        ]


def test_the_forest_and_the_pipelines_are_batched_across_requests():
    # trees and DataFrame pipelines compute each row on its own: the probe finds them safe to batch
    for kind in ("extra trees on calendar features", "ridge partition pipeline", "categorical input"):
        assert MODELS[kind][0].batch_invariant, kind
    # the forest is predicted through its exact fast path (the answers above are checked against its own predict)
    assert MODELS["extra trees on calendar features"][0].fast is not None
    assert all(MODELS[kind][0].fast is None for kind in MODELS if "trees" not in kind)
    assert not batch_invariant(
        MODELS["ridge (array path)"][0].model, MODELS["ridge (array path)"][0].schema, None, True
    )


def test_a_bad_request_fails_alone_with_its_own_field():
    loaded, rows = MODELS["ridge partition pipeline"]
    requests = [rows[:2], [rows[2], ["not a time", 0, 50]], rows[3:4], [[1, 2]], rows[4:6]]
    outcomes = predict_batch(loaded, requests)
    assert isinstance(outcomes[1], InputError) and outcomes[1].field == "data[1][0]"  # fails in conversion
    assert isinstance(outcomes[3], InputError) and outcomes[3].field == "data[0]"  # fails the checks
    for i in (0, 2, 4):
        assert outcomes[i] == [unbatched(loaded, row) for row in requests[i]]
    colored, _ = MODELS["categorical input"]
    (outcome,) = predict_batch(colored, [[["purple", 0.5]]])
    assert isinstance(outcome, InputError) and "must be one of [red, green, blue]" in str(outcome)


class Picky:
    """Rejects rows with a negative first value (the caller's fault); predicts their sum otherwise."""

    def predict(self, x):
        x = np.asarray(x, dtype=float)
        if (x[:, 0] < 0).any():
            raise ValueError("negative input")
        return x.sum(axis=1)


class Broken:
    def predict(self, x):
        raise RuntimeError("model bug")


def test_a_model_error_reaches_exactly_the_requests_it_belongs_to():
    meta = {"input_columns": ["a", "b"]}
    picky = loaded_model(Picky(), meta, None)
    outcomes = predict_batch(picky, [[[1, 2]], [[-1, 2]], [[3, 4], [5, 6]]])
    assert outcomes[0] == [3.0] and outcomes[2] == [7.0, 11.0]
    assert isinstance(outcomes[1], ModelRejected)
    broken = loaded_model(Broken(), meta, None)

    async def run():
        batcher = Batcher()
        results = await asyncio.gather(*(batcher.submit(broken, [[i, 1]]) for i in range(4)), return_exceptions=True)
        after = await batcher.submit(picky, [[1, 1]])  # the worker carries on
        batcher.close()
        return results, after

    results, after = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) and "model bug" in str(r) for r in results) and after == [2.0]


class Costly:
    """Sums each row; every call costs ``seconds`` of CPU on its thread whatever the rows (like a forest)."""

    def __init__(self, seconds: float):
        self.seconds, self.sizes = seconds, []

    def predict(self, x):
        started = time.thread_time()
        while time.thread_time() - started < self.seconds:
            pass
        self.sizes.append(len(x))
        return np.asarray(x, dtype=float).sum(axis=1)


def costly_model(seconds: float, batched: bool = True) -> LoadedModel:
    schema = schema_from_metadata({"input_columns": ["a", "b"]})
    entry = ModelEntry(name="m", version="1", folder=None)  # type: ignore[arg-type]
    return LoadedModel(entry, Costly(seconds), schema, False, batched)


async def closed_loop(batcher: Batcher, loaded: LoadedModel, callers: int, rounds: int) -> list[list]:
    """``callers`` clients, each sending its next one-row request shortly (< 1 ms) after its answer."""
    rng = random.Random(0)

    async def client(i: int) -> list:
        answers = []
        for r in range(rounds):
            answers.append(await batcher.submit(loaded, [[i, r]]))
            await asyncio.sleep(rng.random() / 1000)
        return answers

    return await asyncio.gather(*(client(i) for i in range(callers)))


def test_a_busy_models_next_batch_waits_for_the_callers_of_its_last_one():
    # without the wait, the callers coming back one by one split into a small batch and the rest
    loaded = costly_model(0.02)  # callers come back within 1 ms; a call costs 20 ms: a wide margin on a busy host

    async def run(max_wait: float):
        batcher = Batcher(max_wait=max_wait)
        answers = await closed_loop(batcher, loaded, callers=8, rounds=12)
        batcher.close()
        return answers, batcher

    loaded.model.sizes.clear()
    answers, batcher = asyncio.run(run(0.1))  # the wait is at most the call's cost (20 ms), not 100 ms
    assert answers == [[[float(i + r)] for r in range(12)] for i in range(8)]
    full = sum(1 for size in loaded.model.sizes if size == 8)
    assert batcher.waited > 0 and full >= 0.7 * len(loaded.model.sizes), loaded.model.sizes
    waiting_calls = len(loaded.model.sizes)
    loaded.model.sizes.clear()
    answers, batcher = asyncio.run(run(0.0))
    assert answers == [[[float(i + r)] for r in range(12)] for i in range(8)] and batcher.waited == 0
    assert len(loaded.model.sizes) > waiting_calls  # more predict calls for the same requests


def test_a_lone_request_and_a_model_predicted_request_by_request_never_wait():
    async def run():
        batcher = Batcher(max_wait=0.05)
        busy = costly_model(0.002)
        await closed_loop(batcher, busy, callers=4, rounds=3)
        waited = batcher.waited
        await asyncio.sleep(0.1)  # idle for longer than the wait and a call: the next request goes at once
        assert await batcher.submit(busy, [[1, 2]]) == [3.0]
        assert batcher.waited == waited
        one_by_one = costly_model(0.002, batched=False)  # one predict per request: nothing to gain by waiting
        await closed_loop(batcher, one_by_one, callers=4, rounds=3)
        assert batcher.waited == waited
        batcher.close()

    asyncio.run(run())


def test_what_the_batcher_remembers_of_a_model_never_keeps_it_alive():
    # the cache evicts models (10,000 partition models, 256 loaded): the batcher must not hold on to them
    async def run():
        batcher = Batcher(max_wait=0.01)
        loaded = costly_model(0.001)
        await closed_loop(batcher, loaded, callers=3, rounds=2)
        assert len(batcher._queues) == 1  # its measured cost and last demand, kept while the model lives
        gone = weakref.ref(loaded)
        del loaded
        gc.collect()
        assert gone() is None and batcher._queues == {}
        batcher.close()

    asyncio.run(run())
