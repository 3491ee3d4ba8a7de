"""What the evaluate and register steps read of training (also when an Azure ML parallel job wrote only model
folders), and the run report: the worst partitions by the promotion metric are plotted, every run is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ml_service.pipelines.report import worst, write_report
from ml_service.pipelines.run_train_pipeline import keep_report
from ml_service.pipelines.training import MODELS_DIR, RESULT_FILE, SUMMARY_FILE, read_training_summary
from ml_service.util.files import write_json


def test_summary_is_rebuilt_from_model_folders_when_the_step_wrote_none(tmp_path):
    for model_id in ("a", "b/region=r1", "b/region=r2"):
        write_json(tmp_path / MODELS_DIR / model_id / RESULT_FILE, {"model_id": model_id, "status": "trained", "x": 1})
    summary = read_training_summary(tmp_path)
    assert [r["model_id"] for r in summary["results"]] == ["a", "b/region=r1", "b/region=r2"]
    assert "x" not in summary["results"][0]  # only the result fields, not the whole record
    assert summary["runs"] == {}


def test_written_summary_wins(tmp_path):
    write_json(tmp_path / SUMMARY_FILE, {"results": [{"model_id": "x"}], "runs": {"x": "run1"}})
    write_json(tmp_path / MODELS_DIR / "y" / RESULT_FILE, {"model_id": "y"})
    assert read_training_summary(tmp_path)["runs"] == {"x": "run1"}


def result(key: str, mae: float, status: str = "trained") -> dict:
    return {
        "use_case": "toy",
        "model_id": f"toy/store={key}",
        "model_name": "toy",
        "key": f"store={key}",
        "status": status,
        "metrics": {} if status == "failed" else {"mae": mae},
        "estimator": "lstsq-one",
        "seconds": 0.01,
        "error": "ValueError: no" if status == "failed" else "",
    }


def test_worst_by_metric_and_direction():
    results = [result("a", 0.5), result("b", 3.0), result("c", 1.0), result("d", 9.0, "failed"), result("e", 2.0)]
    assert [r["key"] for r in worst(results, "mae", "minimize", 2)] == ["store=b", "store=e"]
    assert [r["key"] for r in worst(results, "mae", "maximize", 2)] == ["store=a", "store=c"]


def test_the_report_plots_the_worst_partitions_not_the_first(tmp_path):
    maes = {f"s{i:02d}": 0.1 * (i % 7) for i in range(20)}
    results = [result(k, v) for k, v in maes.items()] + [result("broken", 0, "failed")]
    for r in results:
        if r["status"] == "trained":
            record = {**r, "holdout": {"actual": [1.0, 2.0, 3.0], "predicted": [1.5, 2.0, 2.5]}}
            write_json(tmp_path / "trained" / MODELS_DIR / r["model_id"] / RESULT_FILE, record)
    models = {r["model_id"]: {"promote": True, "reason": "nothing in production", "key": r["key"]} for r in results}
    decisions = {"toy": {"metric": "mae", "direction": "minimize", "models": models}}
    registered = {"toy": {"registered": True, "version": "3"}}
    page = write_report(tmp_path / "report.html", results, decisions, registered, tmp_path / "trained").read_text()
    plotted = [k for k in maes if f"toy/store={k}: mae=" in page]
    assert plotted == ["s05", "s06", "s12", "s13"]  # the two 0.6s, then the first two of the three 0.5s
    assert "store=s00: mae=" not in page  # the first in name order is one of the best
    assert "Hold-out of the worst 4 by mae" in page and "registered version 3" in page
    assert "toy/store=broken" in page and "ValueError: no" in page  # the failure is listed
    assert "over 20 models" in page  # the histogram counts the trained models


def test_every_run_keeps_its_report(tmp_path):
    run_dir = tmp_path / "runs" / "toy" / "current"
    report = run_dir / "register" / "output" / "report.html"
    assert keep_report(run_dir, datetime.now(UTC)) is None  # a run that failed before the report
    report.parent.mkdir(parents=True)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for n in range(3):  # three runs, two of them within one second
        report.write_text(f"report {n}")
        index = keep_report(run_dir, started + timedelta(microseconds=n * 10, seconds=n // 2))
    kept = sorted(p for p in index.parent.glob("2*.html"))
    assert [p.read_text() for p in kept] == ["report 0", "report 1", "report 2"]
    links = index.read_text()
    assert links.index(kept[2].name) < links.index(kept[1].name) < links.index(kept[0].name)  # newest first
