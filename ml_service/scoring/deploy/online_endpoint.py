"""Deploy the packaged scoring image to an Azure ML online endpoint, blue/green, with key authentication.

Managed online endpoint by default (QA); with `--kubernetes --compute NAME` a Kubernetes online endpoint on
a cluster attached to the workspace (production). Steps: build the image in the workspace's registry (ACR
Tasks; with `--image-file` the image ml_service.scoring.deploy.image built once, by digest, and no build),
create the endpoint if missing, create the deployment of the colour *not* taking traffic, run the
smoke-test hook against that deployment only, then move 100% of the traffic to it. The previous colour is
kept (0%) for a quick roll-back and replaced by the next deployment.

The endpoint checks the key (`Authorization: Bearer <key>`) and forwards only `/score` to the container's
`/score`; the container's own SCORING_API_KEY is left empty (the endpoint is the gate).

Inference data collection (docs/monitoring.md), on unless `--collect-rate 0`: the deployment declares Azure's
data collector with the collections `model_inputs` and `model_outputs` (hourly folders), and the container gets
SCORING_COLLECT_RATE; the service then logs sampled requests through azureml-ai-monitoring. The collector's own
`sampling_rate` stays 1.0: the package draws for each collection separately (its collector_json.py), which would
keep the inputs of a request without its outputs; the service draws once per request instead.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ml_service.monitoring.collected import AZURE_INPUTS, AZURE_OUTPUTS
from ml_service.scoring.deploy import common

COLOURS = ("blue", "green")
SAMPLE_REQUESTS = "sample_request.json"  # written by ml_service.scoring.package
MANAGED_INSTANCE_TYPE = "Standard_DS3_v2"
COLLECT_RATE = 1.0  # share of answered requests collected for monitoring by default


def next_colour(traffic: Mapping[str, int] | None) -> str:
    """The colour to deploy: the one not taking traffic (blue when there is none yet)."""
    live = {name for name, share in (traffic or {}).items() if share > 0}
    for colour in COLOURS:
        if colour not in live:
            return colour
    raise common.DeployError(f"both {' and '.join(COLOURS)} take traffic; set one to 0% first")


def build_endpoint(name: str, kubernetes: bool, compute: str | None, traffic: Mapping[str, int] | None = None):
    from azure.ai.ml.entities import KubernetesOnlineEndpoint, ManagedOnlineEndpoint

    description = "Scoring service (the packaged image), blue/green"
    if kubernetes:
        if not compute:
            raise common.DeployError(
                "--kubernetes needs --compute NAME (a Kubernetes cluster attached to the workspace)", 2
            )
        return KubernetesOnlineEndpoint(
            name=name, compute=compute, auth_mode="key", description=description, traffic=dict(traffic or {})
        )
    return ManagedOnlineEndpoint(name=name, auth_mode="key", description=description, traffic=dict(traffic or {}))


def check_collect_rate(rate: float) -> float:
    if not 0 <= rate <= 1:
        raise common.DeployError(f"--collect-rate {rate} is not between 0 (off) and 1 (every request)", 2)
    return rate


def build_data_collector():
    """Azure's data collector for the service's two collections (Microsoft Learn, "Collect production data from
    models for real-time inferencing", "Update your deployment YAML"): files rolled hourly, like the local ones."""
    from azure.ai.ml.entities import DataCollector, DeploymentCollection

    collections = {name: DeploymentCollection(enabled="true") for name in (AZURE_INPUTS, AZURE_OUTPUTS)}
    return DataCollector(collections=collections, rolling_rate="hour", sampling_rate=1.0)


def build_deployment(
    endpoint: str,
    colour: str,
    image: str,
    kubernetes: bool,
    app_insights: str = "",
    collect_rate: float = COLLECT_RATE,
):
    """The deployment of one colour: the image as a custom container, probes on /health, scoring on /score;
    ``collect_rate`` > 0: inference data collection through Azure's data collector (0: none)."""
    from azure.ai.ml.entities import (
        Environment,
        KubernetesOnlineDeployment,
        ManagedOnlineDeployment,
        ProbeSettings,
        ResourceRequirementsSettings,
        ResourceSettings,
    )

    port = common.SCORING_PORT
    environment = Environment(
        name="scoring-image",
        image=image,
        inference_config={
            "liveness_route": {"path": "/health", "port": port},
            "readiness_route": {"path": "/health", "port": port},
            "scoring_route": {"path": "/score", "port": port},
        },
    )
    variables = {"SCORING_PORT": str(port), "SCORING_API_KEY": ""}
    if app_insights:
        variables["APPLICATIONINSIGHTS_CONNECTION_STRING"] = app_insights
    check_collect_rate(collect_rate)
    if collect_rate:
        variables["SCORING_COLLECT_RATE"] = str(collect_rate)
    common_args: dict[str, Any] = dict(
        name=colour,
        endpoint_name=endpoint,
        environment=environment,
        environment_variables=variables,
        instance_count=1,
        liveness_probe=ProbeSettings(initial_delay=10, period=10, failure_threshold=6),
        readiness_probe=ProbeSettings(initial_delay=10, period=10, failure_threshold=6),
        data_collector=build_data_collector() if collect_rate else None,
    )
    if kubernetes:
        requests = ResourceSettings(cpu="1", memory="2Gi")
        return KubernetesOnlineDeployment(**common_args, resources=ResourceRequirementsSettings(requests=requests))
    return ManagedOnlineDeployment(**common_args, instance_type=MANAGED_INSTANCE_TYPE)


def base_url(scoring_uri: str) -> str:
    """The service's base URL (what the smoke test is given): the scoring URI without its /score."""
    return scoring_uri[: -len("/score")] if scoring_uri.endswith("/score") else scoring_uri


def sample_requests(package: common.Package) -> list[dict[str, Any]]:
    """The package's sample requests (one per model); a package without them cannot be checked: a failure."""
    path = package.folder / SAMPLE_REQUESTS
    try:
        requests = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise common.DeployError(
            f"{path}: no sample requests to check the new colour with ({exc}); rebuild the package with "
            "python -m ml_service.scoring.package"
        ) from None
    if not isinstance(requests, list) or not requests:
        raise common.DeployError(f"{path}: no sample request; rebuild the package")
    return requests


def check_answer(request: dict[str, Any], answer: Any) -> None:
    """An answer to a sample request must hold one prediction per row."""
    try:
        body = json.loads(answer) if isinstance(answer, (str, bytes)) else answer
        predictions = body["predictions"]
    except (ValueError, TypeError, KeyError):
        raise common.DeployError(f"{request['model_name']}: not a scoring answer: {str(answer)[:200]}") from None
    if not isinstance(predictions, list) or len(predictions) != len(request["data"]):
        raise common.DeployError(f"{request['model_name']}: expected {len(request['data'])} predictions")


def invoke_smoke_test(ml_client: Any, endpoint: str, colour: str, package: common.Package) -> None:
    """Default hook: score every sample request of the package on the new colour only (traffic still 0%).
    Any failure stops the deployment before traffic moves."""
    requests = sample_requests(package)
    with tempfile.TemporaryDirectory() as folder:
        for request in requests:
            request_file = Path(folder) / "request.json"
            request_file.write_text(json.dumps(request), encoding="utf-8")
            answer = ml_client.online_endpoints.invoke(
                endpoint_name=endpoint, deployment_name=colour, request_file=str(request_file)
            )
            check_answer(request, answer)
            print(f"smoke test of {colour}: {request['model_name']} answered")


def deploy(
    args: Any,
    settings: Any,
    ml_client: Any,
    registry_client: Any,
    upload_client: Any,
    smoke_test: Callable[[Any, str, str, common.Package], None] = invoke_smoke_test,
) -> tuple[str, str]:
    """Build, deploy the idle colour, smoke test it, shift traffic; returns (base URL, key)."""
    from azure.core.exceptions import ResourceNotFoundError

    package, _, image = common.build_package_image(
        registry_client, upload_client, settings, args.package, image_file=getattr(args, "image_file", None)
    )
    try:
        existing = ml_client.online_endpoints.get(args.name)
        traffic = dict(existing.traffic or {})
    except ResourceNotFoundError:
        traffic = {}
        endpoint = build_endpoint(args.name, args.kubernetes, args.compute)
        ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    colour = next_colour(traffic)
    deployment = build_deployment(
        args.name,
        colour,
        image,
        args.kubernetes,
        settings.applicationinsights_connection_string,
        getattr(args, "collect_rate", COLLECT_RATE),
    )
    print(f"endpoint {args.name}: deploying {colour} ({image}); traffic now {traffic or 'none'}", flush=True)
    ml_client.online_deployments.begin_create_or_update(deployment).result()
    smoke_test(ml_client, args.name, colour, package)
    shifted = {name: 0 for name in traffic} | {colour: 100}
    endpoint = build_endpoint(args.name, args.kubernetes, args.compute, shifted)
    done = ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    key = ml_client.online_endpoints.get_keys(args.name).primary_key
    print(f"endpoint {args.name}: traffic {shifted}")
    return base_url(done.scoring_uri), key


def main(argv: list[str] | None = None) -> int:
    cli = common.parser(__doc__.splitlines()[0])
    cli.add_argument("--kubernetes", action="store_true", help="a Kubernetes online endpoint (needs --compute)")
    cli.add_argument("--compute", help="name of the Kubernetes compute attached to the workspace")
    cli.add_argument("--key-file", type=Path, help="write the endpoint's primary key to this file")
    cli.add_argument(
        "--collect-rate",
        type=float,
        default=COLLECT_RATE,
        help=f"share of answered requests collected for monitoring by Azure's data collector (default {COLLECT_RATE}; "
        "0: none)",
    )
    args = cli.parse_args(argv)

    def body() -> None:
        settings = common.azure_settings(args.dry_run)
        if args.kubernetes and not args.compute:
            raise common.DeployError("--kubernetes needs --compute NAME", 2)
        check_collect_rate(args.collect_rate)
        if args.dry_run:
            package = common.read_package(args.package)
            image = common.planned_image(package, args.image_file)
            endpoint = build_endpoint(args.name, args.kubernetes, args.compute)
            deployment = build_deployment(
                args.name, "<blue|green: the colour without traffic>", image, args.kubernetes, "", args.collect_rate
            )
            print(f"would deploy {image}, create endpoint {args.name} if missing:")
            print(common.to_json(endpoint._to_dict()))
            print("deploy (then smoke test it, then give it 100% of the traffic):")
            print(common.to_json(deployment._to_dict()))
            return
        from azure.ai.ml import MLClient
        from azure.core import PipelineClient
        from azure.identity import DefaultAzureCredential
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        credential = DefaultAzureCredential()
        ml_client = MLClient(
            credential, settings.azure_subscription_id, settings.resource_group, settings.workspace_name
        )
        registry = ContainerRegistryManagementClient(credential, settings.azure_subscription_id)
        url, key = deploy(args, settings, ml_client, registry, PipelineClient(base_url="https://upload"))
        common.write_text(args.url_file, url)
        common.write_text(args.key_file, key)
        print(f"endpoint {args.name}: {url}")

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
