"""The smoke test's pure parts (sample rows, partition sampling) and its refusal when nothing answers.

The runs against a real server (pass, failing model, wrong key) are in test_scoring_package.py, which serves a
packaged build context on 127.0.0.1.
"""

from __future__ import annotations

from ml_service.util.smoke_test_scoring_service import choose, main, sample_rows
from tests.test_scoring_support import free_port


def test_sample_rows_prefers_stored_sample_then_builds_from_columns():
    assert sample_rows({"sample_input": [[1, 2]]}) == [[1, 2]]
    detail = {"input_columns": ["timeStamp", "temp"], "input_schema": {"temp": "number", "timeStamp": "datetime"}}
    assert sample_rows(detail) == [["2017-08-13 06:00", 1.0]]
    assert sample_rows({"input_columns": ["a", "b"]}) == [[1.0, 1.0]]


def test_choose_samples_partitions_per_set():
    models = [{"name": "single"}] + [{"name": f"s/k={i}", "model_set": "s"} for i in range(10)]
    assert [m["name"] for m in choose(models, 2)] == ["single", "s/k=0", "s/k=1"]


def test_exits_2_when_the_service_never_gets_ready(capsys):
    assert main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 2
    assert "not ready" in capsys.readouterr().err
