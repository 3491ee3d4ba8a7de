"""The NumPy fast path: used only where it gives exactly the DataFrame path's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml_service.scoring.inputs import InputError, accepts_arrays, rows_to_array, rows_to_frame, schema_from_metadata
from ml_service.scoring.model_store import ModelStore, entries_for_folder
from tests.test_scoring_support import DIABETES_ROWS, SHOP_ROWS, SHOP_TYPES, diabetes_model, save_single, shop_model

COLUMNS = ["a", "b", "c"]
SCHEMA = schema_from_metadata({"input_columns": COLUMNS})
SAMPLE = [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]]


def training_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((50, 3)), columns=COLUMNS)
    return frame, frame.to_numpy() @ np.array([1.0, -2.0, 0.5])


def test_plain_scikit_learn_models_take_arrays_with_identical_predictions():
    frame, y = training_frame()
    for model in (Ridge().fit(frame, y), Pipeline([("scale", StandardScaler()), ("ridge", Ridge())]).fit(frame, y)):
        assert accepts_arrays(model, SCHEMA, SAMPLE)
        assert np.array_equal(
            model.predict(rows_to_frame(SCHEMA, SAMPLE)), model.predict(rows_to_array(SCHEMA, SAMPLE))
        )


def test_models_that_select_columns_by_name_keep_dataframes():
    frame, y = training_frame()
    by_name = Pipeline([("pick", ColumnTransformer([("keep", "passthrough", ["c", "a"])])), ("ridge", Ridge())]).fit(
        frame, y
    )
    assert not accepts_arrays(by_name, SCHEMA, SAMPLE)


def test_custom_steps_dates_and_missing_samples_keep_dataframes():
    frame, y = training_frame()

    class Custom(Ridge):
        pass

    Custom.__module__ = "my_use_case.models"
    assert not accepts_arrays(Custom().fit(frame, y), SCHEMA, SAMPLE)
    assert not accepts_arrays(Ridge().fit(frame, y), SCHEMA, None)
    dated = schema_from_metadata({"input_columns": ["t", "x"], "input_schema": {"t": "datetime", "x": "number"}})
    assert not accepts_arrays(Ridge().fit(frame, y), dated, [["2017-01-01", 1.0]])


def test_rows_to_array_checks_like_rows_to_frame():
    for bad in ([], [[1.0, 2.0]], [[1.0, "x", 3.0]], [[1.0, float("nan"), 3.0]], "rows"):
        for convert in (rows_to_array, rows_to_frame):
            try:
                convert(SCHEMA, bad)
            except InputError:
                continue
            raise AssertionError(f"{convert.__name__} accepted {bad!r}")
    assert rows_to_array(SCHEMA, SAMPLE).shape == (2, 3)


def test_an_integer_beyond_float_range_is_an_input_error_with_or_without_dates():
    dated = schema_from_metadata({"input_columns": ["t", "x"], "input_schema": {"t": "datetime", "x": "number"}})
    for schema, row in ((SCHEMA, [1.0, 10**400, 3.0]), (dated, ["2017-01-01", 10**400])):
        for convert in (rows_to_array, rows_to_frame) if schema is SCHEMA else (rows_to_frame,):
            try:
                convert(schema, [row])
            except InputError as error:
                assert "too large" in str(error)
                continue
            raise AssertionError(f"{convert.__name__} accepted {row!r}")


def test_text_and_boolean_inputs_keep_dataframes(tmp_path):
    shop = schema_from_metadata({"input_columns": list(SHOP_TYPES), "input_schema": SHOP_TYPES})
    assert [column.kind for column in shop] == [SHOP_TYPES[c] for c in SHOP_TYPES]
    assert not accepts_arrays(shop_model(), shop, SHOP_ROWS)
    frame = rows_to_frame(shop, SHOP_ROWS)
    assert frame["promo"].dtype == bool and frame["colour"].tolist() == ["red", "blue"]


def test_the_store_decides_per_registered_model(tmp_path):
    numbers = save_single(diabetes_model(), tmp_path / "diabetes_model", DIABETES_ROWS[:1])
    text = save_single(shop_model(), tmp_path / "shop_model", SHOP_ROWS[:1], input_types=SHOP_TYPES)
    store = ModelStore(
        entries_for_folder("diabetes_model", "1", numbers) + entries_for_folder("shop_model", "1", text), 2
    )
    assert store.get("diabetes_model").array_input and not store.get("shop_model").array_input
