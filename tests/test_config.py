"""The use-case declaration and configuration: every mistake is one line naming the file, the use case and the key."""

from __future__ import annotations

import json

import pytest

from ml_service.config import (
    ConfigError,
    config_from_mapping,
    declared_groups,
    declared_use_cases,
    load_config,
    select_use_cases,
)
from ml_service.pipelines import run_train_pipeline
from tests.fixtures.projects import toy_config


def problem(project, config: dict) -> str:
    """The error of loading `config` as use case `toy` of a fresh project (it must fail)."""
    root = project({"toy": config})
    with pytest.raises(ConfigError) as caught:
        load_config("toy", root)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("configs/toy.json: use case toy: "), message
    return message


def test_a_good_configuration_is_typed_and_defaults_are_filled(project):
    root = project()
    config = load_config("toy", root)
    assert config.name == "toy" and config.model_name == "toy"  # the registered name defaults to the use case's
    assert config.path == "configs/toy.json"
    assert config.input_columns == ("colour", "x")  # not the label, not the partition column
    assert config.input_types() == {"colour": "category", "x": "number"}
    assert config.is_partitioned and config.columns["colour"].allowed == ("red", "green", "blue")
    assert config.parallel.error_threshold == 5 and config.checks.min_rows == 8
    assert config.model == {"holdout": 4}  # the use case's own section, untouched


def test_bad_column_type(project):
    config = toy_config()
    config["columns"]["x"]["type"] = "float"
    message = problem(project, config)
    assert '"columns.x.type"' in message and "'number'" in message


def test_unknown_key(project):
    message = problem(project, {**toy_config(), "lable": "y"})
    assert '"lable"' in message and "not permitted" in message


def test_label_not_a_column(project):
    message = problem(project, toy_config(label="sales"))
    assert "label 'sales' is not one of the columns (store, colour, x, y)" in message


def test_partition_column_not_a_column(project):
    message = problem(project, toy_config(partition_columns=["shop"]))
    assert "partition column 'shop' is not one of the columns" in message


def test_bad_frequency(project):
    message = problem(project, toy_config(time_frequency="fortnightly"))
    assert '"time.frequency"' in message and "'fortnightly' is not a pandas frequency" in message


def test_time_column_must_be_a_datetime(project):
    config = toy_config(time_frequency="D")
    config["columns"]["day"]["type"] = "number"
    assert "time column 'day' must have type datetime" in problem(project, config)


def test_range_on_a_text_column_and_min_above_max(project):
    config = toy_config()
    config["columns"]["colour"]["min"] = 0
    assert "min/max apply to number and integer columns, not category" in problem(project, config)
    config = toy_config()
    config["columns"]["x"] = {"type": "number", "min": 5, "max": 1}
    assert "min 5.0 is above max 1.0" in problem(project, config)


def test_bad_code_reference_and_model_name(project):
    assert "\"code\": must be 'package.module:Class'" in problem(project, toy_config(code="toyuc.model"))
    assert "model_name 'a/b' must be a non-empty name without '/'" in problem(project, toy_config(model_name="a/b"))


def test_several_problems_are_counted_on_the_one_line(project):
    message = problem(project, {**toy_config(), "lable": "y", "colour": 1})
    assert "(and 1 more problem(s))" in message


def test_name_in_the_file_must_match_the_declaration(project):
    message = problem(project, {**toy_config(), "name": "other"})
    assert "\"name\" is 'other', declared as 'toy'" in message


def test_columns_may_be_a_shared_json_file(project):
    shared = toy_config()["columns"]
    root = project({"toy": toy_config(columns="configs/columns.json")})
    (root / "configs" / "columns.json").write_text(json.dumps(shared))
    assert list(load_config("toy", root).columns) == ["store", "colour", "x", "y"]
    (root / "configs" / "columns.json").unlink()
    with pytest.raises(ConfigError, match=r'"columns": .*columns.json not found'):
        load_config("toy", root)


def test_missing_and_unreadable_configuration_files(project):
    root = project()
    (root / "configs" / "toy.json").write_text("{not json")
    with pytest.raises(ConfigError, match="use case toy: not valid JSON"):
        load_config("toy", root)
    (root / "configs" / "toy.json").unlink()
    with pytest.raises(ConfigError, match="not found \\(declared for use case toy in pyproject.toml\\)"):
        load_config("toy", root)


def test_from_memory_names_the_use_case():
    with pytest.raises(ConfigError, match=r'^<memory>: use case m: "evaluation": Field required'):
        config_from_mapping("m", {k: v for k, v in toy_config().items() if k != "evaluation"})


# --- the declaration --------------------------------------------------------------------------------------


def test_declared_use_cases_in_order_and_groups(project):
    root = project(
        {"toy": toy_config(), "other": toy_config(), "third": toy_config()},
        groups={"pair": ["third", "toy"]},
    )
    assert list(declared_use_cases(root)) == ["toy", "other", "third"]
    assert declared_groups(root) == {"pair": ["third", "toy"]}
    assert select_use_cases("pair", root) == ["third", "toy"]
    assert select_use_cases("other, pair,toy", root) == ["other", "third", "toy"]  # each once, in order given
    assert select_use_cases(None, root, everything=True) == ["toy", "other", "third"]


def test_unknown_use_case_lists_the_declared_ones(project):
    root = project({"toy": toy_config(), "other": toy_config()}, groups={"both": ["toy", "other"]})
    with pytest.raises(ConfigError) as caught:
        select_use_cases("toys", root)
    assert str(caught.value) == "unknown use case 'toys'; declared use cases: toy, other; groups: both"
    with pytest.raises(ConfigError, match=r"^unknown use case 'toys'; declared use cases: toy, other$"):
        load_config("toys", root)


def test_no_use_case_given_lists_the_declared_ones(project, capsys):
    root = project({"toy": toy_config(), "other": toy_config()})
    with pytest.raises(ConfigError, match="no use case given: pass --use-case NAME\\[,NAME\\] or --all; declared: toy"):
        select_use_cases("", root)
    # the runner: exit 2, one line, nothing trained
    assert run_train_pipeline.main([]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no use case given" in err and "declared: toy, other" in err
    assert not (root / "local").exists()


def test_bad_groups(project):
    root = project({"toy": toy_config()}, groups={"g": ["toy", "ghost"]})
    with pytest.raises(ConfigError, match="g names undeclared use case\\(s\\) ghost"):
        declared_groups(root)
    root = project({"toy": toy_config()}, groups={"toy": ["toy"]})
    with pytest.raises(ConfigError, match="toy is both a group and a use case"):
        declared_groups(root)


def test_bad_declaration(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.mlops.use-cases]\ntoy = ""\n')
    with pytest.raises(ConfigError, match="toy must be the path of its configuration file"):
        declared_use_cases(tmp_path)
    (tmp_path / "pyproject.toml").write_text("[tool.mlops\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        declared_use_cases(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match="no use case declared"):
        select_use_cases(None, tmp_path, everything=True)


def test_data_file_must_be_relative(project):
    assert "must be a path relative to the project root" in problem(project, toy_config(data={"path": "/abs/toy.csv"}))
