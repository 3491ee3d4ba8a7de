"""The batch-scoring pipeline published for reuse: an Azure ML batch endpoint with a pipeline-component
deployment (`BatchEndpoint` + `PipelineComponentBatchDeployment`), the v2 home of a published v1 pipeline.

Written as YAML beside the job's (`run_pipeline --pipeline batch-score --dry-run`) and loaded back with the SDK's
own schemas, offline: the pipeline component passes `_validate()`, the endpoint and the deployment load with
`load_batch_endpoint` and the pipeline deployment's schema. Creating them needs a workspace:
`ml_client.batch_endpoints.begin_create_or_update(endpoint)`, then the deployment; a job is then
`ml_client.batch_endpoints.invoke(endpoint_name=..., inputs={"new_data": Input(path=...)})`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

COMPONENT_FILE = "batch-component.yml"
ENDPOINT_FILE = "batch-endpoint.yml"
DEPLOYMENT_FILE = "batch-deployment.yml"


def endpoint_name(use_case: str) -> str:
    """A valid endpoint name (letters, digits and '-', starting with a letter, at most 32 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", use_case.lower()).strip("-")
    name = f"{name[:24].rstrip('-')}-batch" if name else "batch"
    return name if name[0].isalpha() else f"b-{name}"[:32]


def write_batch_endpoint(job: Any, folder: Path, use_case: str, compute: str) -> list[Path]:
    """Component, endpoint and deployment YAML of the batch pipeline job `job`, each loaded back and checked."""
    import yaml
    from azure.ai.ml import load_batch_endpoint, load_component
    from azure.ai.ml.entities import BatchEndpoint, PipelineComponentBatchDeployment

    folder.mkdir(parents=True, exist_ok=True)
    component = job._to_component()
    component.name = re.sub(r"[^a-z0-9_]+", "_", f"{use_case}_batch_scoring".lower())
    result = component._validate()
    if not result.passed:
        raise ValueError(f"the batch pipeline component fails the SDK's validation: {dict(result.error_messages)}")
    component.dump(folder / COMPONENT_FILE)
    if not load_component(folder / COMPONENT_FILE)._validate().passed:
        raise ValueError(f"{folder / COMPONENT_FILE} does not load back as a valid component")
    name = endpoint_name(use_case)
    endpoint = BatchEndpoint(name=name, description=f"Batch scoring of {use_case} with its production models")
    # dump() of an endpoint returns an ordered dict (and writes nothing): plain YAML written here
    (folder / ENDPOINT_FILE).write_text(yaml.safe_dump(json.loads(json.dumps(endpoint.dump(None))), sort_keys=False))
    load_batch_endpoint(folder / ENDPOINT_FILE)
    deployment = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/pipelineComponentBatchDeployment.schema.json",
        "name": "production",
        "endpoint_name": name,
        "type": "pipeline",
        "component": f"./{COMPONENT_FILE}",
        "settings": {"default_compute": compute, "continue_on_step_failure": False},
    }
    (folder / DEPLOYMENT_FILE).write_text(yaml.safe_dump(deployment, sort_keys=False))
    PipelineComponentBatchDeployment._load(data=deployment, yaml_path=folder / DEPLOYMENT_FILE)  # raises if invalid
    return [folder / COMPONENT_FILE, folder / ENDPOINT_FILE, folder / DEPLOYMENT_FILE]
