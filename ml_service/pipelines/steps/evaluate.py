"""Step: decide whether the trained model replaces the production one (metric and direction from config)."""

from __future__ import annotations

import sys

from ml_service.pipelines.steps.common import load_use_case, run_step, step_parser
from ml_service.pipelines.steps.train import TRAIN_FILE
from ml_service.registry.mlflow_registry import connect, production_model
from ml_service.util.env_variables import load_settings
from ml_service.util.files import read_json, write_json

DECISION_FILE = "decision.json"


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["trained"]).parse_args(argv)

    def body() -> None:
        use_case = load_use_case(args.use_case)
        params = use_case.load_parameters()
        settings = load_settings()
        trained = read_json(args.trained / TRAIN_FILE)
        client = connect(settings)
        current = production_model(client, params.model_name, settings.production_alias)
        if not settings.run_evaluation:
            decision = use_case.evaluate.Decision(True, "evaluation disabled (RUN_EVALUATION=false), promoting")
        else:
            decision = use_case.evaluate.decide_promotion(
                trained["metrics"],
                use_case.register.metrics_from_tags(current.tags) if current else None,
                params.metric,
                params.direction,
                current.version if current else None,
            )
        client.set_tag(trained["run_id"], "promotion", "promoted" if decision.promote else "kept production")
        write_json(
            args.output / DECISION_FILE,
            {
                "promote": decision.promote,
                "reason": decision.reason,
                "metric": params.metric,
                "direction": params.direction,
                "production_version": current.version if current else None,
            },
        )
        print(f"evaluate: {decision.reason}")

    return run_step("evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
