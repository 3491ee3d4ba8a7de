"""Step (many models): compare every trained model with its own production counterpart.

A single model is compared with the production version of its registered name; a partition model with its
entry in the production model set. The metric and its direction come from each use case's configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ml_service.pipelines.many_models import read_training_summary
from ml_service.pipelines.steps.common import run_step
from ml_service.pipelines.steps.ff_prepare import parser
from ml_service.pipelines.steps.ff_train import SUMMARY_FILE
from ml_service.util.env_variables import load_settings
from ml_service.util.files import write_json

DECISIONS_FILE = "decisions.json"


def production_metrics(
    client: Any, name: str, alias: str, scratch: Path
) -> tuple[str | None, dict[str, dict[str, float]]]:
    """Production version of `name` and per-model metrics {model_id: metrics} (one entry if single)."""
    from ml_service.registry.mlflow_registry import production_model, read_set_manifest

    current = production_model(client, name, alias)
    if current is None:
        return None, {}
    manifest = read_set_manifest(client, current, scratch / name)
    if manifest is None:
        metrics = {k.removeprefix("metric."): float(v) for k, v in current.tags.items() if k.startswith("metric.")}
        return current.version, {name: metrics}
    return current.version, {f"{name}/{key}": entry["metrics"] for key, entry in manifest["models"].items()}


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--trained", type=Path, required=True, help="input: ff_train output")
    cli.add_argument("--output", type=Path, required=True, help="output folder: decisions")
    args = cli.parse_args(argv)

    def body() -> None:
        from ff.config import load_pipeline_config
        from ff.evaluate import decide
        from ml_service.registry.mlflow_registry import connect

        config = load_pipeline_config(args.config)
        settings = load_settings()
        client = connect(settings)
        results = read_training_summary(args.trained, SUMMARY_FILE)["results"]
        decisions: dict[str, Any] = {}
        for name in sorted({r["model_name"] for r in results}):
            evaluation = config.get(name).evaluation
            version, incumbents = production_metrics(
                client, name, settings.production_alias, args.output / "production"
            )
            models = {}
            for r in (r for r in results if r["model_name"] == name):
                candidate = r["metrics"] if r["status"] != "failed" else None
                if not settings.run_evaluation and candidate is not None:
                    promote, reason = True, "evaluation disabled (RUN_EVALUATION=false)"
                else:
                    promote, reason = decide(
                        candidate, incumbents.get(r["model_id"]), evaluation.metric, evaluation.direction
                    )
                models[r["model_id"]] = {"promote": promote, "reason": reason, "key": r["key"]}
            promoted = sum(m["promote"] for m in models.values())
            decisions[name] = {
                "production_version": version,
                "metric": evaluation.metric,
                "direction": evaluation.direction,
                "models": models,
            }
            shown = f"production version {version}" if version else "nothing in production yet"
            print(f"ff_evaluate: {name}: {promoted} of {len(models)} promoted ({shown})")
        write_json(args.output / DECISIONS_FILE, decisions)

    return run_step("ff_evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
