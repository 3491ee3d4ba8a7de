"""ff/pipeline_config.json loading: the shipped file is valid, and each kind of mistake fails in one line."""

import copy
import json
import shutil

import pytest

from ff.config import (
    DEFAULT_CONFIG_PATH,
    MODEL_CODE,
    ConfigError,
    config_hash,
    load_pipeline_config,
    parse_pipeline_config,
    use_fast_path,
)


@pytest.fixture
def raw():
    return json.loads(DEFAULT_CONFIG_PATH.read_text())


def test_shipped_config_has_the_three_use_cases():
    config = load_pipeline_config()
    assert config.names == ("nyc_energy_model", "diabetes_model", "nyc_energy_regions_model")
    energy = config.get("nyc_energy_model")
    assert energy.task == "forecasting" and energy.horizon == 48 and energy.label == "demand"
    assert energy.input_columns == ("timeStamp", "precip", "temp")
    assert energy.data.generator.partitions == 0
    diabetes = config.get("diabetes_model")
    assert diabetes.data.path == "data/diabetes.csv" and diabetes.label == "Y"
    assert diabetes.input_columns == ("AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6")
    regions = config.get("nyc_energy_regions_model")
    assert regions.partition_columns == ("region",) and regions.input_columns == (
        "timeStamp",
        "precip",
        "temp",
    )
    assert regions.automl.fast_path.enabled and use_fast_path(regions, regions.data.generator.partitions)


def _error(raw, tmp_path) -> str:
    path = tmp_path / "pipeline_config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_choice_names_use_case_and_key(raw, tmp_path):
    raw["use_cases"][1]["task"] = "clasification"
    message = _error(raw, tmp_path)
    assert (
        'use_cases[1] (diabetes_model): "task" must be one of forecasting, regression, got "clasification"' in message
    )


def test_unknown_key(raw, tmp_path):
    raw["use_cases"][0]["horizn"] = 48
    assert 'use_cases[0] (nyc_energy_model): "horizn" is not a known key' in _error(raw, tmp_path)


def test_missing_key(raw, tmp_path):
    del raw["use_cases"][2]["label"]
    assert 'use_cases[2] (nyc_energy_regions_model): "label" is missing' in _error(raw, tmp_path)


def test_wrong_type(raw, tmp_path):
    raw["use_cases"][0]["horizon"] = "48"
    assert '(nyc_energy_model): "horizon" must be an integer, got str "48"' in _error(raw, tmp_path)
    raw["use_cases"][0]["horizon"] = True
    assert '"horizon" must be an integer, got true' in _error(raw, tmp_path)


def test_bad_values(raw, tmp_path):
    cases = [
        (lambda r: r["use_cases"][0]["automl"].update(time_budget_s=0), '"time_budget_s" must be > 0'),
        (
            lambda r: r["use_cases"][0]["automl"].update(estimators=["lgbm", "svm"]),
            '"estimators" must only hold',
        ),
        (lambda r: r["use_cases"][0].update(label="load"), '"label" must be one of "columns"'),
        (
            lambda r: r["use_cases"][0]["evaluation"].update(direction="maximize"),
            'for mape must be "minimize"',
        ),
        (lambda r: r["use_cases"][1].update(horizon=24), '"horizon" only applies to forecasting'),
        (
            lambda r: r["use_cases"][2].update(partition_columns=["zone"]),
            'names "zone" that is not in "columns"',
        ),
        (lambda r: r["use_cases"][2]["data"].update(partitions=-1), '"partitions" must be >= 0'),
        (lambda r: r["use_cases"][0]["automl"]["fast_path"].update(estimator="svm"), "automl.fast_path"),
        (lambda r: r["use_cases"][1]["checks"]["ranges"].update(AGE=[90, 10]), "min 90 > max 10"),
        (lambda r: r["use_cases"].append(copy.deepcopy(r["use_cases"][0])), '"model_name" is used twice'),
    ]
    for mutate, expected in cases:
        broken = copy.deepcopy(raw)
        mutate(broken)
        assert expected in _error(broken, tmp_path)


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "pipeline_config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_pipeline_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline_config(tmp_path / "absent.json")


def test_forecasting_requires_time_column(raw):
    del raw["use_cases"][0]["time_column"]
    with pytest.raises(ConfigError, match=r'\(nyc_energy_model\): "time_column" is missing'):
        parse_pipeline_config(raw)


def test_config_hash_is_stable_and_sensitive(raw):
    first = parse_pipeline_config(raw).use_cases[0]
    again = parse_pipeline_config(copy.deepcopy(raw)).use_cases[0]
    assert config_hash(first) == config_hash(again)
    assert len(config_hash(first)) == 16
    raw["use_cases"][0]["automl"]["time_budget_s"] = 21
    assert config_hash(parse_pipeline_config(raw).use_cases[0]) != config_hash(first)
    # other use cases do not change the hash
    raw["use_cases"][0]["automl"]["time_budget_s"] = 20
    raw["use_cases"][1]["automl"]["time_budget_s"] = 99
    assert config_hash(parse_pipeline_config(raw).use_cases[0]) == config_hash(first)


def test_config_hash_covers_the_model_code(raw, tmp_path):
    use_case = parse_pipeline_config(raw).use_cases[0]
    for name in MODEL_CODE:
        shutil.copy(DEFAULT_CONFIG_PATH.parent / name, tmp_path / name)
    assert config_hash(use_case, tmp_path) == config_hash(use_case)
    features = tmp_path / "features.py"
    features.write_text(features.read_text().replace("BALANCE_POINT_F = 65.0", "BALANCE_POINT_F = 60.0"))
    assert config_hash(use_case, tmp_path) != config_hash(use_case)
