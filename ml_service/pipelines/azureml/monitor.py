"""Monitoring in Azure ML: the monitor step as a (scheduled) job, and Azure ML's own model monitor of the endpoint.

Three objects, each built and checked offline, without credentials:

- the **monitor job**: a one-step pipeline job whose step runs the monitor step's command line,
  `python -m ml_service.pipelines.steps.monitor --use-case <members> --collected ${{inputs.collected}}
  [--actuals ${{inputs.actuals}}] --output ${{outputs.output}}`; its `collected` input is by default the folder
  Azure ML's data collector writes for the online endpoint (`collected_path`), its output the folder holding
  monitor.json, retrain.json and report.html. Rendered by the same builder as training (`builder.py`);
- a **JobSchedule** running that job every day (`schedule.yml`, `create_job: ./pipeline.yml`);
- a **model monitor** (`MonitorSchedule`) of one deployment of the online endpoint: data drift of the model
  inputs and prediction drift of the model outputs, against each use case's training data (an MLTable data
  asset), on serverless Spark, with optional alert e-mails. It sees the deployment as a whole (every model
  behind the endpoint pooled); drift per model is the monitor step's job.

What the deployment must declare for both: a `data_collector` with the collections `model_inputs` and
`model_outputs` enabled (COLLECTIONS), and the scoring container logging its inputs and predictions to them
with `azureml-ai-monitoring` (the outputs with the inputs' correlation context).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_service.pipelines.definition import PIPELINE_INPUT, Binding, PipelineSpec, StepSpec
from ml_service.use_case import LoadedUseCase

MONITOR_MODULE = "ml_service.pipelines.steps.monitor"
# Where Azure ML's data collector writes when a collection names no data path of its own: the workspace's
# default blob datastore, then <endpoint>/<deployment>/<collection>/<yyyy>/<MM>/<dd>/<HH>/<instance>.jsonl
# (learn.microsoft.com "Collect production data from models deployed for real-time inferencing"; the SDK's
# DEFAULT_MDC_PATH, with which it registers each collection as the data asset <endpoint>-<deployment>-<collection>).
DATA_COLLECTOR_ROOT = "azureml://datastores/workspaceblobstore/paths/modelDataCollector"
# The collection names Azure ML's model monitoring recognises as a deployment's inputs and outputs.
COLLECTIONS = ("model_inputs", "model_outputs")
DAILY = "0 5 * * *"  # 05:00 UTC, after the nightly batch scoring (02:00)
# Serverless Spark for the model monitor: an instance type model monitoring supports, and a runtime the SDK accepts.
SPARK_INSTANCE_TYPE = "standard_e4s_v3"
SPARK_RUNTIME = "3.4"
# Jensen-Shannon distance above which Azure's monitor flags a feature (or the predictions) as drifted.
DRIFT_THRESHOLD = 0.1
PIPELINE_FILE = "pipeline.yml"
SCHEDULE_FILE = "schedule.yml"
MODEL_MONITOR_FILE = "model-monitor.yml"
REFERENCE_FOLDER = "reference"
# Endpoint and deployment names: letters, digits and '-', starting with a letter (Azure ML's rule).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
_CLOUD = ("azureml:", "https://", "abfss://", "wasbs://")


class MonitorError(ValueError):
    """A setting or argument of the Azure monitoring objects that the user fixes (one line)."""


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name or ""):
        raise MonitorError(
            f"{kind} name {name!r} is not an Azure ML {kind} name (3-32 letters, digits or '-', starting with a letter)"
        )
    return name


def collected_path(endpoint: str, deployment: str | None = None) -> str:
    """The data collector's folder of an endpoint: every deployment (both colours of a blue/green endpoint, so
    the monitor sees the traffic before and after a swap), or one deployment."""
    path = f"{DATA_COLLECTOR_ROOT}/{check_name('endpoint', endpoint)}"
    return f"{path}/{check_name('deployment', deployment)}" if deployment else path


def is_cloud_path(value: str) -> bool:
    return str(value).startswith(_CLOUD)


def monitoring_pipeline(use_cases: list[str], name: str | None = None, actuals: bool = False) -> PipelineSpec:
    """One step, the monitor step's command line; inputs the collected data (and the actuals when given)."""
    inputs = {"collected": Binding(PIPELINE_INPUT, "collected")}
    if actuals:
        inputs["actuals"] = Binding(PIPELINE_INPUT, "actuals")
    step = StepSpec(
        "monitor",
        MONITOR_MODULE,
        "compare what production received and answered with each model's training data; select models to retrain",
        inputs=inputs,
        parameters={"use_case": ",".join(use_cases)},
    )
    label = name or (use_cases[0] if len(use_cases) == 1 else "use-cases")
    pipeline_inputs = {"collected": "local/monitoring/collected"}
    if actuals:
        pipeline_inputs["actuals"] = "local/monitoring/actuals"
    return PipelineSpec(
        f"{label}-monitoring",
        f"Monitor {', '.join(use_cases)}: drift and decay per model, the models to retrain",
        pipeline_inputs,
        (step,),
    )


def folder_input(value: str | Path):
    """A pipeline input for a folder: a cloud folder mounted read-only, or a local folder (uploaded)."""
    from azure.ai.ml import Input

    if is_cloud_path(str(value)):
        return Input(type="uri_folder", path=str(value), mode="ro_mount")
    if not Path(value).is_dir():
        raise MonitorError(f"{value}: no such folder (a local folder, or an azureml:// / https:// folder)")
    return Input(type="uri_folder", path=str(value))


# --- the JobSchedule of the monitor job ------------------------------------------------------------------------


def schedule_name(use_case: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{use_case}-monitoring").strip("-")


def cron_trigger(expression: str):
    from azure.ai.ml.entities import CronTrigger

    if len(expression.split()) != 5:
        raise MonitorError(f"schedule {expression!r}: expected a 5-field cron expression, e.g. {DAILY!r} (daily)")
    return CronTrigger(expression=expression, time_zone="UTC")


def build_job_schedule(job: Any, use_case: str, cron: str = DAILY):
    """A JobSchedule that submits the monitor job on `cron` (UTC)."""
    from azure.ai.ml.entities import JobSchedule

    return JobSchedule(
        name=schedule_name(use_case),
        display_name=f"{use_case} monitoring",
        description=f"Runs the monitor step of {use_case} on {cron} (UTC): drift, decay, the models to retrain",
        trigger=cron_trigger(cron),
        create_job=job,
    )


def write_job_schedule(schedule: Any, folder: Path, job_file: str = PIPELINE_FILE) -> Path:
    """schedule.yml referring to the job's own YAML (`create_job: ./pipeline.yml`), loaded back with the SDK.

    `schedule.dump()` would inline the job with its local paths absolute; the schedule YAML form refers to a job
    file instead, as `az ml schedule create -f` takes it.
    """
    import yaml

    trigger = json.loads(json.dumps(schedule._to_dict()["trigger"]))  # the SDK's own form of the trigger
    document = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/schedule.schema.json",
        "name": schedule.name,
        "display_name": schedule.display_name,
        "description": schedule.description,
        "trigger": trigger,
        "create_job": f"./{job_file}",
    }
    path = folder / SCHEDULE_FILE
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def load_schedule_back(path: Path):
    """Load a schedule YAML with the SDK's schema (relative paths resolve against its folder) and build its REST
    request body offline; raises on any problem."""
    from azure.ai.ml.entities._load_functions import load_schedule

    loaded = load_schedule(source=str(path))
    loaded._to_rest_object()
    return loaded


# --- the model monitor ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A use case's training data as a data asset: an MLTable folder, and the asset's name and version."""

    use_case: LoadedUseCase
    folder: Path
    name: str
    version: str

    @property
    def asset(self) -> str:
        return f"azureml:{self.name}:{self.version}"


def reference_data(use_case: LoadedUseCase, folder: Path, datastore: Path) -> Reference:
    """The use case's training data (its raw data, as prepare reads it) as an MLTable folder; the version is a
    hash of the data, so the same data is the same asset version."""
    from ml_service.pipelines.azureml.automl import DATA_FILE, write_training_data

    written = write_training_data(use_case, folder, datastore)
    digest = hashlib.sha256((written / DATA_FILE).read_bytes()).hexdigest()[:16]
    return Reference(use_case, written, f"{use_case.config.model_name}-training", digest)


def ml_task(use_cases: Iterable[LoadedUseCase]) -> str | None:
    """regression or classification, when every use case behind the deployment agrees (else None: unset)."""
    tasks = {
        "regression" if c.config.columns[c.config.label].type in ("number", "integer") else "classification"
        for c in use_cases
    }
    return tasks.pop() if len(tasks) == 1 else None


def drift_features(use_case: LoadedUseCase) -> tuple[list[str], dict[str, str]]:
    """The inputs a request sends, without datetime columns (a time stamp always drifts), and which of them are
    categorical."""
    types = use_case.config.input_types()
    features = [c for c, kind in types.items() if kind != "datetime"]
    categorical = {c: "categorical" for c in features if types[c] in ("category", "string", "boolean")}
    return features, categorical


def signal_key(use_case: LoadedUseCase) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", use_case.config.model_name)


def build_model_monitor(
    endpoint: str,
    deployment: str,
    references: list[Reference],
    emails: Iterable[str] = (),
    cron: str = DAILY,
):
    """The MonitorSchedule of one deployment: per use case a data-drift signal over its input columns and a
    prediction-drift signal, both against its training data (the label is the reference's target column)."""
    from azure.ai.ml import Input
    from azure.ai.ml.constants import MonitorDatasetContext
    from azure.ai.ml.entities import (
        AlertNotification,
        DataDriftMetricThreshold,
        DataDriftSignal,
        MonitorDefinition,
        MonitoringTarget,
        MonitorSchedule,
        PredictionDriftMetricThreshold,
        PredictionDriftSignal,
        ReferenceData,
        ServerlessSparkCompute,
    )
    from azure.ai.ml.entities._monitoring.thresholds import CategoricalDriftMetrics, NumericalDriftMetrics

    if not references:
        raise MonitorError("a model monitor needs the training data of at least one use case")
    signals: dict[str, Any] = {}
    for reference in references:
        config = reference.use_case.config
        training = ReferenceData(
            input_data=Input(type="mltable", path=reference.asset),
            data_context=MonitorDatasetContext.TRAINING,
            data_column_names={"target_column": config.label},
        )
        features, categorical = drift_features(reference.use_case)
        key = signal_key(reference.use_case)
        signals[f"data_drift_{key}"] = DataDriftSignal(
            reference_data=training,
            features=features,
            feature_type_override=categorical or None,
            metric_thresholds=DataDriftMetricThreshold(
                numerical=NumericalDriftMetrics(jensen_shannon_distance=DRIFT_THRESHOLD),
                categorical=CategoricalDriftMetrics(jensen_shannon_distance=DRIFT_THRESHOLD),
            ),
            alert_enabled=True,
        )
        numeric = config.columns[config.label].type in ("number", "integer")
        metrics = (NumericalDriftMetrics if numeric else CategoricalDriftMetrics)(
            jensen_shannon_distance=DRIFT_THRESHOLD
        )
        signals[f"prediction_drift_{key}"] = PredictionDriftSignal(
            reference_data=training,
            metric_thresholds=PredictionDriftMetricThreshold(**{"numerical" if numeric else "categorical": metrics}),
            alert_enabled=True,
        )
    addresses = [e for e in emails if e]
    for address in addresses:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
            raise MonitorError(f"alert e-mail {address!r} is not an e-mail address")
    definition = MonitorDefinition(
        compute=ServerlessSparkCompute(instance_type=SPARK_INSTANCE_TYPE, runtime_version=SPARK_RUNTIME),
        monitoring_target=MonitoringTarget(
            ml_task=ml_task(r.use_case for r in references),
            endpoint_deployment_id=f"azureml:{check_name('endpoint', endpoint)}:{check_name('deployment', deployment)}",
        ),
        monitoring_signals=signals,
        alert_notification=AlertNotification(emails=addresses) if addresses else None,
    )
    return MonitorSchedule(
        name=re.sub(r"[^A-Za-z0-9_-]+", "-", f"{endpoint}-{deployment}-model-monitor"),
        display_name=f"{endpoint}/{deployment} model monitor",
        description=(
            f"Azure ML model monitoring of deployment {deployment} of {endpoint}: input and prediction drift of "
            f"{', '.join(r.use_case.name for r in references)} against their training data"
        ),
        trigger=cron_trigger(cron),
        create_monitor=definition,
    )


def write_model_monitor(monitor: Any, references: list[Reference], folder: Path) -> list[Path]:
    """model-monitor.yml, and per use case its training data as a data asset YAML (`reference-<name>.yml`,
    type mltable, path ./reference/<use case>) to create before the monitor; each loaded back with the SDK."""
    import yaml
    from azure.ai.ml import load_data

    written = []
    for reference in references:
        asset = {
            "$schema": "https://azuremlschemas.azureedge.net/latest/data.schema.json",
            "name": reference.name,
            "version": reference.version,
            "type": "mltable",
            "path": f"./{reference.folder.resolve().relative_to(folder.resolve()).as_posix()}",
            "description": f"Training data of {reference.use_case.name}: the model monitor's reference",
        }
        path = folder / f"reference-{reference.name}.yml"
        path.write_text(yaml.safe_dump(asset, sort_keys=False), encoding="utf-8")
        load_data(source=str(path))
        written.append(path)
    document = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/monitorSchedule.schema.json",
        **json.loads(json.dumps(monitor._to_dict())),
    }
    path = folder / MODEL_MONITOR_FILE
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    load_schedule_back(path)
    return [path, *written]


def reference_assets(references: list[Reference]) -> list[Any]:
    """The `Data` assets to create in the workspace before the model monitor that refers to them."""
    from azure.ai.ml.entities import Data

    return [
        Data(name=r.name, version=r.version, type="mltable", path=str(r.folder), description=f"{r.use_case.name}")
        for r in references
    ]


# --- the monitor job's result -------------------------------------------------------------------------------


def read_retrain(path: Path) -> dict[str, list[str]]:
    """The monitor step's retrain.json (`ml_service.pipelines.steps.monitor.read_retrain`); raises MonitorError."""
    from ml_service.pipelines.steps.monitor import RetrainFileError
    from ml_service.pipelines.steps.monitor import read_retrain as read

    try:
        return read(path)
    except RetrainFileError as exc:
        raise MonitorError(str(exc)) from None


def selected(retrain: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The use cases with at least one model to retrain."""
    return {name: keys for name, keys in retrain.items() if keys}
