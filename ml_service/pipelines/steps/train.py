"""Step: fit the use case's model and record the run (parameters, metrics, model folder) in MLflow."""

from __future__ import annotations

import sys

import mlflow
import pandas as pd

from ml_service.pipelines.steps.common import load_use_case, run_step, step_parser
from ml_service.pipelines.steps.prepare import LINEAGE_FILE, PREPARED_FILE
from ml_service.registry.mlflow_registry import connect, ensure_experiment
from ml_service.registry.model_folder import save_model_folder
from ml_service.util.env_variables import load_settings
from ml_service.util.files import read_json, write_json
from ml_service.util.lineage import git_commit

TRAIN_FILE = "train.json"
MODEL_ARTIFACT = "model"


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["prepared"]).parse_args(argv)

    def body() -> None:
        use_case = load_use_case(args.use_case)
        params = use_case.load_parameters()
        settings = load_settings()
        client = connect(settings)
        experiment_id = ensure_experiment(client, args.use_case, settings)
        frame = pd.read_csv(args.prepared / PREPARED_FILE)
        lineage = read_json(args.prepared / LINEAGE_FILE)

        x_train, x_test, y_train, y_test = use_case.train.split_data(
            frame, params.label, params.test_size, params.random_state
        )
        model = use_case.train.train_model(x_train, y_train, params.alpha)
        metrics = use_case.train.get_model_metrics(model, x_test, y_test)
        folder = save_model_folder(
            model,
            args.output / MODEL_ARTIFACT,
            {
                "model_name": params.model_name,
                "input_columns": list(x_train.columns),
                "task": "regression",
                "sample_input": x_test.head(2).to_numpy().tolist(),  # rows the scoring smoke test sends
            },
        )
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"{args.use_case}-train") as run:
            mlflow.log_params(params.training)
            mlflow.log_metrics(metrics)
            mlflow.set_tags(
                {
                    "data_hash": lineage["data_hash"],
                    "git_commit": git_commit(),
                    "model_name": params.model_name,
                }
            )
            mlflow.log_artifacts(str(folder), MODEL_ARTIFACT)
        write_json(
            args.output / TRAIN_FILE,
            {
                "run_id": run.info.run_id,
                "model_name": params.model_name,
                "metrics": metrics,
                "parameters": params.training,
                "data_hash": lineage["data_hash"],
                "artifact_path": MODEL_ARTIFACT,
            },
        )
        shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"train: run {run.info.run_id} alpha={params.alpha} {shown}")

    return run_step("train", body)


if __name__ == "__main__":
    sys.exit(main())
