"""Step: compare every trained model with its own production counterpart, by its use case's metric and direction.

A single model is compared with the production version of its registered name; a partition model with its
entry in the production model set. One rule for all (`ml_service.registry.promotion`): strictly better promotes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ml_service.pipelines.steps.common import root, run_step, step_parser
from ml_service.pipelines.training import read_training_summary
from ml_service.registry.model_set import served_name
from ml_service.registry.promotion import Decision, decide
from ml_service.use_case import load_use_case
from ml_service.util.env_variables import load_settings
from ml_service.util.files import write_json

DECISIONS_FILE = "decisions.json"


def production_metrics(client: Any, model_name: str, alias: str, scratch: Path) -> tuple[str | None, dict[str, Any]]:
    """The production version of `model_name` and its manifest's entries {model id: entry} (empty if none)."""
    from ml_service.registry.mlflow_registry import production_manifest, production_model

    current = production_model(client, model_name, alias)
    if current is None:
        return None, {}
    manifest = production_manifest(client, current, scratch / model_name)
    entries = {served_name(model_name, key): entry for key, entry in manifest["models"].items()}
    return current.version, entries


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["trained"]).parse_args(argv)

    def body() -> None:
        from ml_service.registry.mlflow_registry import connect

        project = root()
        settings = load_settings()
        client = connect(settings)
        results = read_training_summary(args.trained)["results"]
        decisions: dict[str, Any] = {}
        for name in dict.fromkeys(r["use_case"] for r in results):
            config = load_use_case(name, project).config
            metric, direction = config.evaluation.metric, config.evaluation.direction
            version, incumbents = production_metrics(
                client, config.model_name, settings.production_alias, args.output / "production"
            )
            models = {}
            for r in (r for r in results if r["use_case"] == name):
                candidate = r["metrics"] if r["status"] != "failed" else None
                incumbent = incumbents.get(r["model_id"])
                if not settings.run_evaluation and candidate is not None:
                    decision = Decision(True, "evaluation disabled (RUN_EVALUATION=false)")
                else:
                    decision = decide(
                        candidate,
                        incumbent["metrics"] if incumbent else None,
                        metric,
                        direction,
                        incumbent.get("version") if incumbent else None,
                    )
                models[r["model_id"]] = {"promote": decision.promote, "reason": decision.reason, "key": r["key"]}
            promoted = sum(m["promote"] for m in models.values())
            decisions[name] = {
                "model_name": config.model_name,
                "production_version": version,
                "metric": metric,
                "direction": direction,
                "models": models,
            }
            shown = f"production version {version}" if version else "nothing in production yet"
            if len(models) == 1:
                only = next(iter(models.values()))
                print(f"evaluate: {name}: {only['reason']}")
            else:
                print(f"evaluate: {name}: {promoted} of {len(models)} promoted ({shown})")
        write_json(args.output / DECISIONS_FILE, decisions)

    return run_step("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
