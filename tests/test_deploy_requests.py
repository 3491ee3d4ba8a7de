"""Deployers, offline: the requests they would send, through an azure-core transport that stands in for Azure.

`RecordingTransport` replaces only the network edge: the real management clients build, sign (with a fake
token) and send their requests through the real azure-core pipeline; the transport records each one and
answers with canned JSON.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import urllib3
import yaml
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport

from ml_service.scoring.deploy import aci, common, image, online_endpoint, webapp
from tests.conftest import run_module

SUB, RG, WS = "00000000-0000-0000-0000-000000000001", "rg", "ws"
REGISTRY_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/MyAcr"
DIGEST = "sha256:" + "ab12" * 16
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/pull"


class FakeCredential:
    def get_token(self, *scopes, **kwargs):
        return AccessToken("fake-token", 4_102_444_800)


class RecordingTransport(HttpTransport):
    """Answers each request from `routes` (method, URL regex) -> (status, JSON body); records every request."""

    def __init__(self, routes):
        self.routes = routes
        self.requests = []

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def send(self, request, **kwargs):
        import requests
        from azure.core.rest._requests_basic import RestRequestsTransportResponse

        body = request.data if hasattr(request, "data") else request.content
        self.requests.append((request.method, request.url, body, dict(request.headers)))
        for (method, pattern), answer in self.routes.items():
            if method == request.method and re.search(pattern, request.url):
                if callable(answer):  # an answer that changes between calls
                    answer = answer()
                status, payload, headers = (*answer, {})[:3]
                raw = requests.Response()
                raw.status_code = status
                raw.headers.update(headers)
                data = b"" if payload is None else json.dumps(payload).encode()
                raw.raw = urllib3.HTTPResponse(body=io.BytesIO(data), preload_content=False, status=status)
                raw.headers["Content-Type"] = "application/json"
                raw.url = request.url
                return RestRequestsTransportResponse(request=request, internal_response=raw)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def bodies(self, method, pattern):
        found = []
        for m, url, body, _ in self.requests:
            if m == method and re.search(pattern, url):
                found.append(json.loads(body) if isinstance(body, (str, bytes)) and body[:1] in ("{", b"{") else body)
        return found


@pytest.fixture
def package(tmp_path) -> Path:
    folder = tmp_path / "package"
    (folder / "package").mkdir(parents=True)
    (folder / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (folder / "package" / "manifest.json").write_text(json.dumps({"models": []}))
    return folder


@pytest.fixture
def workspace_env(monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("RESOURCE_GROUP", RG)
    monkeypatch.setenv("WORKSPACE_NAME", WS)
    monkeypatch.setenv("SCORING_API_KEY", "s3cret")


def finished_run(tag: str = "", digest: str = DIGEST) -> dict:
    """A succeeded ACR run as Runs - Get answers it: the pushed image with its content digest (outputImages)."""
    pushed = {"registry": "myacr.azurecr.io", "repository": common.IMAGE_REPOSITORY, "tag": tag, "digest": digest}
    return {"properties": {"runId": "ca1", "status": "Succeeded", "outputImages": [pushed] if tag else []}}


def build_routes(package: Path | None = None):
    tag = common.read_package(package).tag if package is not None else ""
    return {
        ("GET", r"/workspaces/ws\?"): (
            200,
            {"location": "westeurope", "properties": {"containerRegistry": REGISTRY_ID}},
        ),
        ("POST", r"/listBuildSourceUploadUrl\?"): (
            200,
            {"uploadUrl": "https://blob.example/src.tar.gz?sas", "relativePath": "source/src.tar.gz"},
        ),
        ("PUT", r"^https://blob\.example/"): (201, {}),
        ("POST", r"/scheduleRun\?"): (200, {"name": "ca1", "properties": {"runId": "ca1", "status": "Queued"}}),
        ("GET", r"/runs/ca1\?"): (200, finished_run(tag)),
    }


# --- pure builders ---------------------------------------------------------------------------------


def test_docker_build_request_and_role_assignment_are_stable():
    body = common.docker_build_request("myacr.azurecr.io/mlops/scoring:abc", "source/x.tar.gz")
    assert body["type"] == "DockerBuildRequest" and body["imageNames"] == ["mlops/scoring:abc"]
    assert body["isPushEnabled"] is True and body["platform"] == {"os": "Linux", "architecture": "amd64"}
    url1, role = common.role_assignment(REGISTRY_ID, "principal-1")
    url2, _ = common.role_assignment(REGISTRY_ID, "principal-1")
    assert url1 == url2 and url1.startswith(
        f"https://management.azure.com{REGISTRY_ID}/providers/Microsoft.Authorization/"
    )
    assert role["properties"]["roleDefinitionId"].endswith(common.ACR_PULL_ROLE)


def test_package_digest_and_archive_are_reproducible(package):
    first, second = common.read_package(package), common.read_package(package)
    assert first.tag == second.tag and len(first.tag) == 16
    assert common.context_archive(package) == common.context_archive(package)
    (package / "extra.txt").write_text("x")
    assert common.read_package(package).tag != first.tag


def test_container_group_model():
    group = aci.container_group(
        "qa", "westeurope", "myacr.azurecr.io/mlops/scoring:t", "myacr.azurecr.io", IDENTITY, "s3cret", "qa-abc123"
    )
    body = group.serialize()
    container = body["properties"]["containers"][0]["properties"]
    assert container["image"] == "myacr.azurecr.io/mlops/scoring:t"
    assert container["ports"] == [{"port": 5001, "protocol": "TCP"}]
    key = [v for v in container["environmentVariables"] if v["name"] == "SCORING_API_KEY"][0]
    assert key == {"name": "SCORING_API_KEY", "secureValue": "s3cret"}  # secure, never a plain value
    ip = body["properties"]["ipAddress"]
    assert ip["type"] == "Public" and ip["dnsNameLabel"] == "qa-abc123" and ip["ports"][0]["port"] == 5001
    assert body["properties"]["imageRegistryCredentials"] == [{"server": "myacr.azurecr.io", "identity": IDENTITY}]
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}


def test_next_colour():
    assert online_endpoint.next_colour({}) == "blue"
    assert online_endpoint.next_colour({"blue": 100}) == "green"
    assert online_endpoint.next_colour({"blue": 0, "green": 100}) == "blue"
    with pytest.raises(common.DeployError):
        online_endpoint.next_colour({"blue": 50, "green": 50})


@pytest.mark.parametrize("kubernetes", [False, True])
def test_online_endpoint_objects_pass_sdk_round_trip(tmp_path, kubernetes):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    compute = "aks-prod" if kubernetes else None
    endpoint = online_endpoint.build_endpoint("scoring-prod", kubernetes, compute, {"blue": 0, "green": 100})
    deployment = online_endpoint.build_deployment(
        "scoring-prod", "green", "myacr.azurecr.io/mlops/scoring:t", kubernetes
    )
    endpoint_file, deployment_file = tmp_path / "endpoint.yml", tmp_path / "deployment.yml"
    # dump(dest) of these objects returns a dict instead of writing (field notes): write the YAML here.
    endpoint_file.write_text(yaml.safe_dump(json.loads(json.dumps(endpoint._to_dict()))))
    deployment_file.write_text(yaml.safe_dump(json.loads(json.dumps(deployment._to_dict()))))
    loaded_endpoint = load_online_endpoint(endpoint_file)
    loaded = load_online_deployment(deployment_file)
    assert loaded_endpoint.auth_mode == "key" and loaded_endpoint.traffic == {"blue": 0, "green": 100}
    assert type(loaded_endpoint) is type(endpoint) and type(loaded) is type(deployment)
    assert loaded.environment.image == "myacr.azurecr.io/mlops/scoring:t"
    routes = loaded.environment.inference_config
    assert routes.scoring_route.path == "/score" and routes.liveness_route.port == 5001
    if kubernetes:
        assert loaded_endpoint.compute.endswith("aks-prod")
    # The REST payloads build offline too.
    deployment._to_rest_object(location="westeurope")
    endpoint._to_rest_online_endpoint(location="westeurope")


def test_site_and_plan_models():
    plan = webapp.build_plan("westeurope").as_dict()
    assert plan["kind"] == "linux" and plan["properties"]["reserved"] is True
    site = webapp.build_site(
        "westeurope", "/plan/id", "myacr.azurecr.io/mlops/scoring:t", webapp.app_settings("k")
    ).as_dict()
    config = site["properties"]["siteConfig"]
    assert config["linuxFxVersion"] == "DOCKER|myacr.azurecr.io/mlops/scoring:t"
    assert config["healthCheckPath"] == "/health" and config["acrUseManagedIdentityCreds"] is True
    settings = {p["name"]: p["value"] for p in config["appSettings"]}
    assert settings["WEBSITES_PORT"] == "5001" and settings["SCORING_API_KEY"] == "k"
    assert site["identity"] == {"type": "SystemAssigned"} and site["properties"]["httpsOnly"] is True


# --- requests through the real clients, network edge replaced ------------------------------------


def test_aci_deploy_network_edge_replaced(package, workspace_env, tmp_path):
    routes = build_routes(package)
    routes[("PUT", r"/containerGroups/qa\?")] = (
        200,
        {
            "location": "westeurope",
            "properties": {
                "provisioningState": "Succeeded",
                "osType": "Linux",
                "containers": [],
                "ipAddress": {"ports": [], "type": "Public", "fqdn": "qa-x.westeurope.azurecontainer.io"},
            },
        },
    )
    transport = RecordingTransport(routes)
    url_file = tmp_path / "url.txt"
    argv = ["--package", str(package), "--name", "qa", "--url-file", str(url_file), "--pull-identity", IDENTITY]
    assert aci.main([*argv, "--plain-http"], credential=FakeCredential(), transport=transport) == 0
    assert url_file.read_text().strip() == "http://qa-x.westeurope.azurecontainer.io:5001"
    tag = common.read_package(package).tag
    (build,) = transport.bodies("POST", r"/scheduleRun\?")
    assert build["imageNames"] == [f"mlops/scoring:{tag}"] and build["sourceLocation"] == "source/src.tar.gz"
    (group,) = transport.bodies("PUT", r"/containerGroups/qa\?")
    container = group["properties"]["containers"][0]["properties"]
    assert container["image"] == f"myacr.azurecr.io/mlops/scoring@{DIGEST}"  # by digest, never by tag
    assert {"name": "SCORING_API_KEY", "secureValue": "s3cret"} in container["environmentVariables"]
    assert group["location"] == "westeurope"
    # Pulled with the user-assigned identity (the registry's admin user is off): in the group's identity and
    # as the registry credential's identity, with no username or password.
    assert group["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    assert group["properties"]["imageRegistryCredentials"] == [{"server": "myacr.azurecr.io", "identity": IDENTITY}]
    put_urls = [u for m, u, _, _ in transport.requests if m == "PUT"]
    assert any(
        u.startswith(
            f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
            "Microsoft.ContainerInstance/containerGroups/qa?"
        )
        for u in put_urls
    )
    upload = [r for r in transport.requests if r[1].startswith("https://blob.example/")][0]
    assert upload[3]["x-ms-blob-type"] == "BlockBlob" and upload[2][:2] == b"\x1f\x8b"  # gzip
    signed = [h.get("Authorization") for m, u, _, h in transport.requests if "management.azure.com" in u]
    assert signed and all(a == "Bearer fake-token" for a in signed)


def test_aci_without_pull_identity_exit_2_before_any_request_network_edge_replaced(package, workspace_env, capsys):
    transport = RecordingTransport(build_routes())
    argv = ["--package", str(package), "--name", "qa", "--plain-http"]
    assert aci.main(argv, credential=FakeCredential(), transport=transport) == 2
    assert "--pull-identity is required" in capsys.readouterr().err
    assert transport.requests == []


def test_aci_refuses_plain_http_unless_told_before_any_request_network_edge_replaced(package, workspace_env, capsys):
    """ACI QA is plain HTTP: the key and the data cross the network in clear text; the deployer says so."""
    transport = RecordingTransport(build_routes())
    argv = ["--package", str(package), "--name", "qa", "--pull-identity", IDENTITY]
    assert aci.main(argv, credential=FakeCredential(), transport=transport) == 2
    err = capsys.readouterr().err
    assert "plain HTTP" in err and "--plain-http" in err and "online_endpoint" in err and len(err.splitlines()) == 1
    assert transport.requests == []


def test_an_accepted_schedule_run_is_followed_to_its_run_network_edge_replaced(package, workspace_env):
    """ACR may answer scheduleRun with 202 Accepted and no body: the build follows the Location header."""
    routes = build_routes(package)
    location = "https://management.azure.com/operations/op1?api-version=2019-06-01-preview"
    routes[("POST", r"/scheduleRun\?")] = (202, None, {"Location": location})
    answers = iter([(202, None), (200, {"name": "ca1", "properties": {"runId": "ca1", "status": "Running"}})])
    routes[("GET", r"/operations/op1\?")] = lambda: next(answers)
    transport = RecordingTransport(routes)
    from azure.core import PipelineClient
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    client = ContainerRegistryManagementClient(FakeCredential(), SUB, transport=transport)
    upload = PipelineClient(base_url="https://upload", transport=transport)
    resources = common.WorkspaceResources("westeurope", REGISTRY_ID)
    image = common.build_image(client, upload, resources, common.read_package(package), sleep=lambda _s: None)
    assert image == f"myacr.azurecr.io/mlops/scoring@{DIGEST}"
    gets = [u for m, u, _, _ in transport.requests if m == "GET"]
    assert sum("/operations/op1" in u for u in gets) == 2 and any("/runs/ca1" in u for u in gets)


def test_built_once_then_deployed_by_digest_without_rebuilding_network_edge_replaced(package, workspace_env, tmp_path):
    """`deploy.image` builds the package's image and records its digest; a deployer given that image file sends no
    build request and deploys `<registry>/<repository>@sha256:...` (QA and production deploy the same bytes)."""
    image_file = package / common.IMAGE_FILE
    builder = RecordingTransport(build_routes(package))
    argv = ["--package", str(package), "--image-file", str(image_file)]
    assert image.main(argv, credential=FakeCredential(), transport=builder) == 0
    recorded = json.loads(image_file.read_text())
    assert recorded["image"] == f"myacr.azurecr.io/mlops/scoring@{DIGEST}" and recorded["registry_id"] == REGISTRY_ID
    assert len(builder.bodies("POST", r"/scheduleRun\?")) == 1
    # The image file rides in the package (the artifact QA and production share) without changing its digest.
    assert recorded["package_digest"] == common.read_package(package).digest
    assert common.IMAGE_FILE not in str(common.context_archive(package))

    routes = {k: v for k, v in build_routes(package).items() if "scheduleRun" not in k[1] and "Upload" not in k[1]}
    plan_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/serverfarms/app-plan"
    routes[("PUT", r"/serverfarms/app-plan\?")] = (200, {"id": plan_id, "location": "westeurope", "properties": {}})
    site = {"identity": {"principalId": "p-1"}, "properties": {"defaultHostName": "app.azurewebsites.net"}}
    routes[("PUT", r"/sites/app\?")] = (200, {"location": "westeurope", **site})
    routes[("PUT", r"/roleAssignments/")] = (201, {})
    routes[("GET", r"/roleAssignments/")] = (200, {"properties": {}})
    routes[("POST", r"/sites/app/restart\?")] = (200, {})
    deployer = RecordingTransport(routes)
    argv = ["--package", str(package), "--name", "app", "--image-file", str(image_file)]
    assert webapp.main(argv, credential=FakeCredential(), transport=deployer) == 0
    (sent,) = deployer.bodies("PUT", r"/sites/app\?")
    assert sent["properties"]["siteConfig"]["linuxFxVersion"] == f"DOCKER|myacr.azurecr.io/mlops/scoring@{DIGEST}"
    assert not [u for _, u, _, _ in deployer.requests if "scheduleRun" in u or "listBuildSourceUploadUrl" in u]
    (role,) = deployer.bodies("PUT", r"/roleAssignments/")
    assert role["properties"]["principalId"] == "p-1"
    assert [u for m, u, _, _ in deployer.requests if m == "PUT" and "roleAssignments" in u][0].startswith(
        f"https://management.azure.com{REGISTRY_ID}/"
    )  # AcrPull on the registry holding the recorded image


def test_an_image_file_of_another_package_is_refused_before_any_request(package, workspace_env, tmp_path, capsys):
    image_file = tmp_path / "image.json"
    common.write_image_file(
        image_file,
        {"image": f"myacr.azurecr.io/mlops/scoring@{DIGEST}", "registry_id": REGISTRY_ID, "package_digest": "0" * 64},
    )
    transport = RecordingTransport(build_routes(package))
    argv = ["--package", str(package), "--name", "app", "--image-file", str(image_file)]
    assert webapp.main(argv, credential=FakeCredential(), transport=transport) == 2
    err = capsys.readouterr().err
    assert "built from another package" in err and len(err.splitlines()) == 1 and transport.requests == []
    by_tag = {"image": "myacr.azurecr.io/mlops/scoring:latest", "registry_id": REGISTRY_ID}
    common.write_image_file(image_file, {**by_tag, "package_digest": common.read_package(package).digest})
    assert webapp.main(argv, credential=FakeCredential(), transport=transport) == 2
    assert "not a reference by digest" in capsys.readouterr().err and transport.requests == []


def test_a_build_that_reports_no_digest_deploys_nothing_network_edge_replaced(package, workspace_env, tmp_path):
    transport = RecordingTransport(build_routes())  # the run's outputImages name no image of this package
    argv = ["--package", str(package), "--image-file", str(tmp_path / "image.json")]
    assert image.main(argv, credential=FakeCredential(), transport=transport) == 1
    assert not (tmp_path / "image.json").exists()


def test_online_endpoint_pre_traffic_check_fails_without_samples(package):
    """No sample_request.json in the package: the new colour cannot be checked, so traffic must not move."""
    with pytest.raises(common.DeployError, match="sample_request.json"):
        online_endpoint.invoke_smoke_test(None, "ep", "green", common.read_package(package))
    request = {"model_name": "m", "data": [[1, 2], [3, 4]]}
    online_endpoint.check_answer(request, json.dumps({"predictions": [1.0, 2.0]}))
    for bad in (json.dumps({"predictions": [1.0]}), "upstream request timeout", json.dumps({"detail": "x"})):
        with pytest.raises(common.DeployError, match="m:"):
            online_endpoint.check_answer(request, bad)


def test_webapp_deploy_network_edge_replaced(package, workspace_env, tmp_path):
    routes = build_routes(package)
    plan_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Web/serverfarms/app-plan"
    routes[("PUT", r"/serverfarms/app-plan\?")] = (200, {"id": plan_id, "location": "westeurope", "properties": {}})
    routes[("PUT", r"/sites/app\?")] = (
        200,
        {
            "location": "westeurope",
            "identity": {"type": "SystemAssigned", "principalId": "p-1"},
            "properties": {"defaultHostName": "app.azurewebsites.net"},
        },
    )
    routes[("PUT", r"/roleAssignments/")] = (201, {})
    # The assignment is not readable at once: the restart must wait until it is.
    reads = iter([(404, {"error": {"code": "RoleAssignmentNotFound"}}), (200, {"properties": {}})])
    routes[("GET", r"/roleAssignments/")] = lambda: next(reads)
    routes[("POST", r"/sites/app/restart\?")] = (200, {})
    transport = RecordingTransport(routes)
    url_file = tmp_path / "url.txt"
    assert (
        webapp.main(
            ["--package", str(package), "--name", "app", "--url-file", str(url_file)],
            credential=FakeCredential(),
            transport=transport,
        )
        == 0
    )
    assert url_file.read_text().strip() == "https://app.azurewebsites.net"
    (site,) = transport.bodies("PUT", r"/sites/app\?")
    assert site["properties"]["serverFarmId"] == plan_id
    assert site["properties"]["siteConfig"]["healthCheckPath"] == "/health"
    (role,) = transport.bodies("PUT", r"/roleAssignments/")
    assert role["properties"]["principalId"] == "p-1"
    order = [(m, u) for m, u, _, _ in transport.requests if "roleAssignments" in u or "/restart" in u]
    assert [m for m, _ in order] == ["PUT", "GET", "GET", "POST"]  # restart only once AcrPull reads back
    settings = {p["name"]: p["value"] for p in site["properties"]["siteConfig"]["appSettings"]}
    assert settings["WEBSITES_CONTAINER_START_TIME_LIMIT"] == str(webapp.START_TIME_LIMIT_S)


# --- command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["aci", "online_endpoint", "webapp", "image"])
def test_without_workspace_exit_2_and_dry_run_needs_none(module, package, tmp_path):
    from importlib import import_module

    main = import_module(f"ml_service.scoring.deploy.{module}").main
    extra = {"online_endpoint": ["--kubernetes", "--compute", "aks"], "aci": ["--plain-http"]}.get(module, [])
    target = ["--image-file", str(tmp_path / "image.json")] if module == "image" else ["--name", "n"]
    assert main(["--package", str(package), *target, *extra]) == 2
    assert main(["--package", str(package), *target, "--dry-run", *extra]) == 0


def test_help_answers():
    result = run_module("ml_service.scoring.deploy.online_endpoint", "--help")
    assert result.returncode == 0 and "--key-file" in result.stdout and "--kubernetes" in result.stdout
