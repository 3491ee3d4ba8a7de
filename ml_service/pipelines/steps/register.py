"""Step: register the promoted model with its lineage tags, then move production onto it if it is still better."""

from __future__ import annotations

import sys

from ml_service.pipelines.steps.common import load_use_case, run_step, step_parser
from ml_service.pipelines.steps.evaluate import DECISION_FILE
from ml_service.pipelines.steps.train import TRAIN_FILE
from ml_service.registry.mlflow_registry import connect, register_version, registered_run_ids
from ml_service.util.env_variables import load_settings
from ml_service.util.files import read_json, write_json
from ml_service.util.lineage import git_commit, lineage_tags

REGISTERED_FILE = "registered.json"


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["trained", "decision"]).parse_args(argv)

    def body() -> None:
        use_case = load_use_case(args.use_case)
        settings = load_settings()
        trained = read_json(args.trained / TRAIN_FILE)
        decision = read_json(args.decision / DECISION_FILE)
        name = trained["model_name"]
        if not decision["promote"]:
            write_json(
                args.output / REGISTERED_FILE,
                {"registered": False, "model_name": name, "reason": decision["reason"]},
            )
            print(f"register: nothing registered for {name}: {decision['reason']}")
            return
        client = connect(settings)
        use_case.register.check_not_registered(trained["run_id"], registered_run_ids(client, name), name)
        tags = use_case.register.registration_tags(
            run_id=trained["run_id"],
            metrics=trained["metrics"],
            parameters=trained["parameters"],
            data_hash=trained["data_hash"],
            git_commit=git_commit(),
            build_id=settings.build_id,
            build_uri=settings.build_uri,
        )
        # compare-and-set: production is checked again when it moves (another run may have promoted since evaluate)
        rule = {"metric": decision["metric"], "direction": decision["direction"]}
        result = register_version(
            client,
            name,
            trained["run_id"],
            trained["artifact_path"],
            tags,
            settings.production_alias,
            metrics=trained["metrics"],
            lineage=lineage_tags(settings.build_id, settings.build_uri),
            data_hash=trained["data_hash"],
            folder=args.trained / trained["artifact_path"],
            force=not settings.run_evaluation,
            **({} if not settings.run_evaluation else rule),
        )
        write_json(
            args.output / REGISTERED_FILE,
            {
                "registered": result.version is not None,
                "promoted": result.promoted,
                "model_name": name,
                "version": result.version,
                "production_version": result.production_version,
                "reason": result.reason,
            },
        )
        if result.promoted:
            print(f"register: {name} version {result.version} registered and in production: {result.reason}")
        elif result.version is None:
            print(f"register: nothing registered for {name}: {result.reason}")
        else:
            print(f"register: {name} version {result.version} registered, not in production: {result.reason}")

    return run_step("register", body)


if __name__ == "__main__":
    sys.exit(main())
