"""The ff configurations (ff/*.json): each declared use case loads and validates, each kind of mistake in the
sample's own `model` section fails in one line naming file, use case and key, and each renders to an Azure ML
AutoML job that the SDK validates offline."""

from __future__ import annotations

import copy
import json

import pytest

from ff.spec import Spec
from ff.tests.conftest import REPO_ROOT, ff_declaration
from ff.use_cases import AUTOML_ALGORITHMS, AUTOML_PRIMARY_METRIC
from ml_service.config import ConfigError, config_from_mapping
from ml_service.pipelines.azureml.automl import automl_validation_errors, build_automl_job, description
from ml_service.pipelines.azureml.job_yaml import load_back, write_job_yaml
from ml_service.use_case import build_use_case, load_use_case

CONFIGS, MEMBERS = ff_declaration()
ENERGY = "nyc_energy_model"


def spec(name: str) -> Spec:
    return load_use_case(name, REPO_ROOT).implementation.spec


def test_the_ff_group_declares_the_three_use_cases():
    assert MEMBERS == ["nyc_energy_model", "diabetes_model", "nyc_energy_regions_model"]
    assert all(path.startswith("ff/") for path in CONFIGS.values())


def test_each_ff_configuration_loads():
    energy = spec("nyc_energy_model")
    assert energy.task == "forecasting" and energy.horizon == 48 and energy.frequency == "h"
    assert energy.label == "demand" and energy.input_columns == ("timeStamp", "precip", "temp")
    assert not energy.automl.fast_path.enabled and energy.automl.metric == "mape"

    diabetes = load_use_case("diabetes_model", REPO_ROOT)
    assert diabetes.implementation.spec.task == "regression" and diabetes.config.label == "Y"
    assert diabetes.config.input_columns == ("AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6")
    assert diabetes.config.data.path == "data/diabetes.csv"

    regions = load_use_case("nyc_energy_regions_model", REPO_ROOT)
    assert regions.config.partition_columns == ("region",)
    assert regions.config.input_columns == ("timeStamp", "precip", "temp")
    assert regions.implementation.spec.automl.fast_path.enabled
    assert regions.config.data.generate["partitions"] == 8


def _error(name: str, mutate) -> str:
    raw = json.loads((REPO_ROOT / CONFIGS[name]).read_text())
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(ConfigError) as info:
        build_use_case(config_from_mapping(name, broken, CONFIGS[name], REPO_ROOT), REPO_ROOT)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{CONFIGS[name]}: use case {name}: ")
    return message


@pytest.mark.parametrize(
    "name,mutate,expected",
    [
        (ENERGY, lambda r: r["model"].update(task="clasification"), '"model.task": Input should be'),
        (ENERGY, lambda r: r["model"].update(horizn=48), '"model.horizn": Extra inputs are not permitted'),
        (ENERGY, lambda r: r["model"]["automl"].update(time_budget_s=0), '"model.automl.time_budget_s"'),
        (ENERGY, lambda r: r["model"]["automl"].update(estimators=["lgbm", "svm"]), '"model.automl.estimators.1"'),
        (ENERGY, lambda r: r["model"]["automl"].update(estimators=[]), '"model.automl.estimators"'),
        (
            ENERGY,
            lambda r: r["model"]["automl"].update(fast_path={"enabled": True, "estimator": "svm"}),
            '"model.automl.fast_path.estimator"',
        ),
        (ENERGY, lambda r: r.pop("time"), 'task "forecasting" needs a "time" section'),
        (ENERGY, lambda r: r["evaluation"].update(direction="maximize"), "mape is minimized"),
        ("diabetes_model", lambda r: r["evaluation"].update(metric="mape"), "reports no 'mape'"),
        ("diabetes_model", lambda r: r["evaluation"].update(direction="minimize", metric="r2"), "r2 is maximized"),
    ],
    ids=[
        "task",
        "unknown-key",
        "budget",
        "estimator",
        "no-estimator",
        "fast-path",
        "no-time",
        "direction",
        "metric-not-reported",
        "r2-direction",
    ],
)
def test_a_bad_model_section_names_the_key(name, mutate, expected):
    assert expected in _error(name, mutate)


def test_unknown_generator_option_is_named(tmp_path):
    generate = load_use_case(ENERGY, REPO_ROOT).implementation.generate
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['partitons'\]"):
        generate({"partitons": 3}, tmp_path / "energy.csv")
    assert not (tmp_path / "energy.csv").exists()


@pytest.mark.parametrize("name", MEMBERS)
def test_automl_job_renders_to_a_valid_azure_ml_job(name, tmp_path):
    """The use case's `automl_job()` description, built into azure.ai.ml objects and validated by the SDK with no
    workspace; the YAML written for submission loads back with the same settings."""
    use_case = load_use_case(name, REPO_ROOT)
    own = spec(name)
    data = tmp_path / "data"
    data.mkdir()
    (data / "MLTable").write_text("paths:\n  - file: ./data.csv\n")
    job = build_automl_job(use_case, data, "cpu-cluster", "ff-automl")
    assert automl_validation_errors(job) == {}
    assert job.task_type.value.lower() == own.task and job.target_column_name == use_case.config.label
    assert job.primary_metric.value == AUTOML_PRIMARY_METRIC[own.automl.metric]
    assert description(use_case)["timeout_minutes"] == job.limits.timeout_minutes >= 15
    allowed = [a.value if hasattr(a, "value") else a for a in job.training.allowed_training_algorithms]
    assert allowed == list(dict.fromkeys(AUTOML_ALGORITHMS[e] for e in own.automl.estimators))
    if own.task == "forecasting":
        settings = job.forecasting_settings
        assert settings.time_column_name == own.time_column and settings.forecast_horizon == own.horizon
        assert settings.frequency == own.frequency
        assert (settings.time_series_id_column_names or []) == list(use_case.config.partition_columns)
    loaded = load_back(write_job_yaml(job, tmp_path / f"{name}.yml"))
    assert loaded.target_column_name == use_case.config.label
    assert loaded.primary_metric.value == job.primary_metric.value
    if use_case.config.partition_columns:
        assert loaded.forecasting_settings.time_series_id_column_names == list(use_case.config.partition_columns)
