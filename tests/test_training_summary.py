"""The evaluate and register steps also work on what an Azure ML parallel job leaves: model folders only."""

from __future__ import annotations

from ml_service.pipelines.many_models import MODELS_DIR, RESULT_FILE, read_training_summary
from ml_service.util.files import write_json


def test_summary_is_rebuilt_from_model_folders_when_the_step_wrote_none(tmp_path):
    for model_id in ("a", "b/region=r1", "b/region=r2"):
        write_json(tmp_path / MODELS_DIR / model_id / RESULT_FILE, {"model_id": model_id, "status": "trained"})
    summary = read_training_summary(tmp_path, "train_summary.json")
    assert [r["model_id"] for r in summary["results"]] == ["a", "b/region=r1", "b/region=r2"]
    assert summary["runs"] == {}


def test_written_summary_wins(tmp_path):
    write_json(tmp_path / "train_summary.json", {"results": [{"model_id": "x"}], "runs": {"x": "run1"}})
    write_json(tmp_path / MODELS_DIR / "y" / RESULT_FILE, {"model_id": "y"})
    assert read_training_summary(tmp_path, "train_summary.json")["runs"] == {"x": "run1"}
