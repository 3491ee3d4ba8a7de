"""What the deployers share: the package, the workspace's registry, the image build (ACR Tasks), the CLI.

The image is built where it will be pulled from: an ACR Tasks run in the workspace's container registry
(`listBuildSourceUploadUrl`, upload of the package as tar.gz, `scheduleRun` of a DockerBuildRequest). The
installed azure-mgmt-containerregistry (15.x) no longer has the Tasks operations, so those three ARM calls
are sent through the registry client's own authenticated pipeline (`send_request`).

Build once, deploy that image everywhere: `python -m ml_service.scoring.deploy.image` builds the package's image
and records its content digest (the run's `outputImages`) in an image file (`image.json`, kept in the package
folder so the package artifact carries it); each deployer given `--image-file` deploys
`<registry>/<repository>@sha256:<digest>` and builds nothing. A later push of the same tag cannot change what a
digest names, so production runs the bytes QA tested.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ARM = "https://management.azure.com"
TASKS_API = "2019-06-01-preview"
WORKSPACE_API = "2024-10-01"
ROLE_API = "2022-04-01"
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # built-in role "AcrPull"
SCORING_PORT = 5001
IMAGE_REPOSITORY = "mlops/scoring"
WORKSPACE_VARIABLES = "AZURE_SUBSCRIPTION_ID, RESOURCE_GROUP and WORKSPACE_NAME"
IMAGE_FILE = "image.json"  # beside the package's Dockerfile; not part of the package's digest nor its context
DIGEST_REFERENCE = re.compile(
    r"^(?P<server>[a-z0-9.-]+)/(?P<repository>[a-z0-9._/-]+)@(?P<digest>sha256:[0-9a-f]{64})$"
)


class DeployError(RuntimeError):
    """A deployment problem reported as one line (exit code 1), or a usage problem (exit code 2)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Package:
    folder: Path
    manifest: dict[str, Any]
    digest: str  # content hash of the folder: the image tag, so one package is one image

    @property
    def tag(self) -> str:
        return self.digest[:16]


@dataclass(frozen=True)
class WorkspaceResources:
    location: str
    registry_id: str  # ARM id of the workspace's container registry

    @property
    def registry_name(self) -> str:
        return self.registry_id.rstrip("/").rsplit("/", 1)[-1]

    @property
    def login_server(self) -> str:
        return f"{self.registry_name.lower()}.azurecr.io"

    def image(self, package: Package) -> str:
        return f"{self.login_server}/{IMAGE_REPOSITORY}:{package.tag}"


def read_package(folder: Path) -> Package:
    """The folder made by `python -m ml_service.scoring.package --output DIR`: Dockerfile, (package/)manifest.json."""
    if not (folder / "Dockerfile").is_file():
        raise DeployError(f"{folder}: no Dockerfile; build it with python -m ml_service.scoring.package", 2)
    candidates = [folder / "manifest.json", folder / "package" / "manifest.json"]
    try:
        manifest_file = next((c for c in candidates if c.is_file()), candidates[0])
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DeployError(f"{folder}/manifest.json: cannot read: {exc}", 2) from None
    digest = hashlib.sha256()
    for path in _context_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return Package(folder, manifest, digest.hexdigest())


def _context_files(folder: Path) -> list[Path]:
    """The package's files, sorted; the image file written after the build is not one of them."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != IMAGE_FILE)


def context_archive(folder: Path) -> bytes:
    """The build context as a reproducible tar.gz (sorted names, zeroed times and owners)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _context_files(folder):
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def docker_build_request(image: str, source_location: str, timeout_s: int = 3600) -> dict[str, Any]:
    """Body of the ACR `scheduleRun` call: build the package's Dockerfile and push the image."""
    return {
        "type": "DockerBuildRequest",
        "imageNames": [image.split("/", 1)[1]],
        "isPushEnabled": True,
        "noCache": False,
        "sourceLocation": source_location,
        "dockerFilePath": "Dockerfile",
        "platform": {"os": "Linux", "architecture": "amd64"},
        "timeout": timeout_s,
    }


def role_assignment(scope: str, principal_id: str, role: str = ACR_PULL_ROLE) -> tuple[str, dict[str, Any]]:
    """(URL, body) granting `role` on `scope` to a managed identity; the name is stable, so reruns are no-ops."""
    subscription = scope.split("/")[2]
    name = uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}|{principal_id}|{role}")
    url = f"{ARM}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={ROLE_API}"
    definition = f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"
    body = {
        "properties": {"roleDefinitionId": definition, "principalId": principal_id, "principalType": "ServicePrincipal"}
    }
    return url, body


def _send(client: Any, method: str, url: str, body: Any = None, headers: dict | None = None):
    from azure.core.rest import HttpRequest

    request = HttpRequest(method, url, json=body, headers=headers)
    response = client.send_request(request)
    if response.status_code >= 400:
        detail = " ".join(str(_json_text(response)).split())[:300]
        raise DeployError(f"{method} {url.split('?')[0]}: HTTP {response.status_code}: {detail}")
    return response


def _json_text(response: Any) -> str:
    return response.text() if callable(response.text) else response.text


def _json(response: Any) -> Any:
    text = _json_text(response)
    return json.loads(text) if text else {}


def workspace_resources(client: Any, subscription: str, resource_group: str, workspace: str) -> WorkspaceResources:
    """Location and container registry of the Azure ML workspace (an ARM GET through `client`)."""
    url = (
        f"{ARM}/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
        f"Microsoft.MachineLearningServices/workspaces/{workspace}?api-version={WORKSPACE_API}"
    )
    body = _json(_send(client, "GET", url))
    registry = body.get("properties", {}).get("containerRegistry")
    if not registry:
        raise DeployError(f"workspace {workspace} has no container registry yet (it is created on first image build)")
    return WorkspaceResources(body["location"], registry)


def build_image(
    registry_client: Any,
    upload_client: Any,
    resources: WorkspaceResources,
    package: Package,
    poll_s: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Build and push the package's image with an ACR Tasks run; returns its reference by content digest
    (`<login server>/<repository>@sha256:...`, from the digest the run reports for the pushed image)."""
    from azure.core.rest import HttpRequest

    image = resources.image(package)
    base = f"{ARM}{resources.registry_id}"
    upload = _json(_send(registry_client, "POST", f"{base}/listBuildSourceUploadUrl?api-version={TASKS_API}"))
    put = HttpRequest(
        "PUT", upload["uploadUrl"], content=context_archive(package.folder), headers={"x-ms-blob-type": "BlockBlob"}
    )
    answer = upload_client.send_request(put)
    if answer.status_code >= 400:
        raise DeployError(f"uploading the build context failed: HTTP {answer.status_code}")
    body = docker_build_request(image, upload["relativePath"])
    scheduled = _send(registry_client, "POST", f"{base}/scheduleRun?api-version={TASKS_API}", body)
    run = _json(scheduled)
    if scheduled.status_code == 202 or not run:
        run = _accepted_run(registry_client, scheduled, poll_s, sleep)
    run_id = run.get("properties", {}).get("runId") or run.get("name")
    status = run.get("properties", {}).get("status", "Queued")
    print(f"image build {run_id}: {status} ({image})", flush=True)
    while status in ("Queued", "Started", "Running"):
        sleep(poll_s)
        run = _json(_send(registry_client, "GET", f"{base}/runs/{run_id}?api-version={TASKS_API}"))
        status = run.get("properties", {}).get("status", "Unknown")
    if status != "Succeeded":
        raise DeployError(f"image build {run_id} ended {status}; see the run's log in the registry")
    digest = pushed_digest(run, IMAGE_REPOSITORY, package.tag)
    print(f"image build {run_id}: Succeeded, {IMAGE_REPOSITORY}:{package.tag} is {digest}", flush=True)
    return f"{resources.login_server}/{IMAGE_REPOSITORY}@{digest}"


def pushed_digest(run: dict[str, Any], repository: str, tag: str) -> str:
    """The content digest of the image a finished run pushed (its `outputImages`): what to deploy."""
    for output in run.get("properties", {}).get("outputImages") or []:
        digest = str(output.get("digest") or "")
        if (
            output.get("repository") == repository
            and output.get("tag") == tag
            and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
        ):
            return digest
    raise DeployError(f"the image build reports no digest for {repository}:{tag} (outputImages); nothing to deploy")


def image_record(image: str, resources: WorkspaceResources, package: Package) -> dict[str, Any]:
    """What the image file holds: the image by digest, its registry, and the package it was built from."""
    return {"image": image, "registry_id": resources.registry_id, "package_digest": package.digest}


def write_image_file(path: Path, record: dict[str, Any]) -> None:
    """Write the image file atomically (a deployer never reads half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_image_file(path: Path, package: Package) -> dict[str, Any]:
    """The image file of `package`: an image by digest, built from exactly this package (exit 2 otherwise)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        image, registry_id = str(record["image"]), str(record["registry_id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"{path}: not an image file of ml_service.scoring.deploy.image ({exc})", 2) from None
    if not DIGEST_REFERENCE.match(image):
        raise DeployError(f"{path}: image {image!r} is not a reference by digest (<registry>/<repo>@sha256:...)", 2)
    if record.get("package_digest") != package.digest:
        raise DeployError(
            f"{path}: the image was built from another package than {package.folder}; deploy the package it was "
            "built from, or build this one with python -m ml_service.scoring.deploy.image",
            2,
        )
    return {"image": image, "registry_id": registry_id}


def _accepted_run(client: Any, accepted: Any, poll_s: float, sleep: Callable[[float], None], tries: int = 60):
    """`scheduleRun` may answer 202 Accepted with no body: follow its Location header until it names the run."""
    location = accepted.headers.get("Location") or accepted.headers.get("Azure-AsyncOperation")
    if not location:
        raise DeployError(f"scheduleRun answered HTTP {accepted.status_code} with no run and no Location to poll")
    for _ in range(tries):
        sleep(poll_s)
        answer = _send(client, "GET", location)
        run = _json(answer) if answer.status_code != 202 else {}
        if run.get("properties", {}).get("runId") or run.get("name"):
            return run
    raise DeployError(f"scheduleRun: no run after {tries} polls of {location.split('?')[0]}")


def build_package_image(
    registry_client: Any,
    upload_client: Any,
    settings: Any,
    package_folder: Path,
    sleep: Callable[[float], None] = time.sleep,
    image_file: Path | None = None,
) -> tuple[Package, WorkspaceResources, str]:
    """What every deployment starts with: read the package, find the workspace's location and registry, and
    the image by digest: the one recorded in `image_file` (built once, no build here; its registry is the one
    pulled from), else build and push it now. Returns the package, the resources and the image reference."""
    package = read_package(package_folder)
    recorded = read_image_file(image_file, package) if image_file is not None else None
    resources = workspace_resources(
        registry_client, settings.azure_subscription_id, settings.resource_group, settings.workspace_name
    )
    if recorded is not None:
        resources = WorkspaceResources(resources.location, recorded["registry_id"])
        if not recorded["image"].startswith(f"{resources.login_server}/"):
            raise DeployError(f"{image_file}: image {recorded['image']} is not in registry {resources.registry_id}", 2)
        print(f"image {recorded['image']} (built once, from {image_file})", flush=True)
        return package, resources, recorded["image"]
    return package, resources, build_image(registry_client, upload_client, resources, package, sleep=sleep)


def poll_sleep(transport: Any) -> Callable[[float], None]:
    """How to wait between build-status polls: not at all when a test transport answers at once."""
    return (lambda _seconds: None) if transport is not None else time.sleep


def planned_image(package: Package, image_file: Path | None = None) -> str:
    """The image a dry run names: the recorded one, else a build's (the registry is only known by asking Azure)."""
    if image_file is not None:
        return read_image_file(image_file, package)["image"]
    return f"{WorkspaceResources('<workspace location>', '<workspace registry>').image(package)} (by its digest)"


def grant_acr_pull(
    client: Any,
    registry_id: str,
    principal_id: str,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = 10.0,
    tries: int = 30,
) -> None:
    """Grant AcrPull and wait until the assignment reads back: a pull right after the PUT can still be refused."""
    url, body = role_assignment(registry_id, principal_id)
    from azure.core.rest import HttpRequest

    response = client.send_request(HttpRequest("PUT", url, json=body))
    if response.status_code == 409:  # RoleAssignmentExists under another name: fine
        return
    if response.status_code >= 400:
        raise DeployError(f"granting AcrPull failed: HTTP {response.status_code}: {_json_text(response)[:200]}")
    for _ in range(tries):
        if client.send_request(HttpRequest("GET", url)).status_code == 200:
            return
        sleep(poll_s)
    raise DeployError(f"the AcrPull assignment for {principal_id} did not appear after {tries} checks")


def parser(description: str) -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--package", type=Path, required=True, help="package folder (ml_service.scoring.package)")
    result.add_argument("--name", required=True, help="name of the deployment (container group, endpoint, web app)")
    result.add_argument("--url-file", type=Path, help="write the scoring service's URL to this file")
    result.add_argument(
        "--image-file",
        type=Path,
        help="deploy the image recorded here by ml_service.scoring.deploy.image (by digest; no build)",
    )
    result.add_argument("--dry-run", action="store_true", help="print what would be created; no credentials")
    return result


def write_text(path: Path | None, text: str) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def to_json(model: Any) -> str:
    """A management model (or dict) as the JSON body the client would send."""
    if hasattr(model, "serialize"):
        body = model.serialize(keep_readonly=False)
    elif hasattr(model, "as_dict"):
        body = model.as_dict()
    else:
        body = model
    return json.dumps(body, indent=2, sort_keys=True, default=str)


def azure_settings(dry_run: bool):
    """Settings, with the workspace required unless --dry-run."""
    from ml_service.util.env_variables import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        raise DeployError(str(exc), 2) from None
    if not dry_run and not settings.azure_workspace_configured:
        raise DeployError(f"no Azure ML workspace configured: set {WORKSPACE_VARIABLES} (or use --dry-run)", 2)
    return settings


def run_cli(body: Callable[[], None]) -> int:
    try:
        body()
    except DeployError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    return 0


def public_service_credential(settings: Any, credential: Any = None) -> Any:
    """The Azure credential for a deployment whose service is public: refuses one with no scoring key."""
    if not settings.scoring_api_key:
        raise DeployError("SCORING_API_KEY is empty: the public service would accept anyone", 2)
    if credential is not None:
        return credential
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
