"""Deploy the packaged scoring image to Azure Container Instances (QA): build it in the workspace's registry
with an ACR Tasks run (or, with `--image-file`, the image ml_service.scoring.deploy.image built once, by digest),
then create or update a container group running it on port 5001.

ACI cannot bind to 127.0.0.1 only: the group gets a public IP with a DNS label
(`<name>-<suffix>.<region>.azurecontainer.io`), PLAIN HTTP: the bearer key and every request and prediction
cross the network in clear text. Use it for non-sensitive QA data only, and say so with `--plain-http`; for
anything else deploy QA to a managed online endpoint (`python -m ml_service.scoring.deploy.online_endpoint`,
HTTPS) or the Web App (HTTPS). `SCORING_API_KEY` is passed as a secure
environment variable and the service refuses /score without it. The image is pulled with a user-assigned
managed identity that has AcrPull on the registry (`--pull-identity`; the registry's admin user is off).
"""

from __future__ import annotations

import hashlib
import sys

from ml_service.scoring.deploy import common

CPU = 1.0
MEMORY_GB = 2.0


def dns_label(name: str, resource_group: str, subscription: str) -> str:
    """A DNS label unique enough in the region: the name plus a short hash of where it lives."""
    suffix = hashlib.sha256(f"{subscription}/{resource_group}/{name}".encode()).hexdigest()[:6]
    return f"{name}-{suffix}".lower()


def container_group(
    name: str,
    location: str,
    image: str,
    login_server: str,
    pull_identity: str,
    api_key: str,
    label: str,
    app_insights: str = "",
    port: int = common.SCORING_PORT,
):
    """The ContainerGroup model sent to ARM (pure: tests assert it exactly)."""
    from azure.mgmt.containerinstance import models as m

    variables = [
        m.EnvironmentVariable(name="SCORING_PORT", value=str(port)),
        m.EnvironmentVariable(name="SCORING_API_KEY", secure_value=api_key),
    ]
    if app_insights:
        variables.append(m.EnvironmentVariable(name="APPLICATIONINSIGHTS_CONNECTION_STRING", secure_value=app_insights))
    probe = m.ContainerProbe(
        http_get=m.ContainerHttpGet(port=port, path="/health", scheme="http"),
        initial_delay_seconds=10,
        period_seconds=10,
        failure_threshold=6,
    )
    container = m.Container(
        name="scoring",
        image=image,
        resources=m.ResourceRequirements(requests=m.ResourceRequests(cpu=CPU, memory_in_gb=MEMORY_GB)),
        ports=[m.ContainerPort(port=port, protocol="TCP")],
        environment_variables=variables,
        liveness_probe=probe,
        readiness_probe=probe,
    )
    return m.ContainerGroup(
        location=location,
        containers=[container],
        os_type="Linux",
        restart_policy="Always",
        identity=m.ContainerGroupIdentity(
            type="UserAssigned", user_assigned_identities={pull_identity: m.UserAssignedIdentities()}
        ),
        image_registry_credentials=[m.ImageRegistryCredential(server=login_server, identity=pull_identity)],
        ip_address=m.IpAddress(ports=[m.Port(port=port, protocol="TCP")], type="Public", dns_name_label=label),
        tags={"purpose": "scoring-qa"},
    )


def service_url(fqdn: str, port: int = common.SCORING_PORT) -> str:
    return f"http://{fqdn}:{port}"


def deploy(args, settings, credential, transport=None) -> str:
    """Build the image, create or update the container group; returns the scoring URL."""
    from azure.core import PipelineClient
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    kwargs = {"transport": transport} if transport is not None else {}
    registry = ContainerRegistryManagementClient(credential, settings.azure_subscription_id, **kwargs)
    upload = PipelineClient(base_url="https://upload", **kwargs)
    _, resources, image = common.build_package_image(
        registry, upload, settings, args.package, common.poll_sleep(transport), args.image_file
    )
    group = container_group(
        args.name,
        resources.location,
        image,
        resources.login_server,
        args.pull_identity,
        settings.scoring_api_key,
        dns_label(args.name, settings.resource_group, settings.azure_subscription_id),
        settings.applicationinsights_connection_string,
    )
    aci = ContainerInstanceManagementClient(credential, settings.azure_subscription_id, **kwargs)
    created = aci.container_groups.begin_create_or_update(settings.resource_group, args.name, group).result()
    fqdn = created.ip_address.fqdn if created.ip_address else None
    if not fqdn:
        raise common.DeployError(f"container group {args.name} has no public FQDN")
    return service_url(fqdn)


def main(argv: list[str] | None = None, credential=None, transport=None) -> int:
    cli = common.parser(__doc__.splitlines()[0])
    cli.add_argument(
        "--pull-identity", default="", help="ARM id of a user-assigned identity with AcrPull on the registry"
    )
    cli.add_argument(
        "--plain-http",
        action="store_true",
        help="accept that the QA service is plain HTTP (key and data in clear text): non-sensitive data only",
    )
    args = cli.parse_args(argv)

    def body() -> None:
        if not args.plain_http:
            raise common.DeployError(
                "ACI serves plain HTTP (the key and the data cross the network in clear text): pass --plain-http "
                "for non-sensitive QA data, or deploy QA with ml_service.scoring.deploy.online_endpoint (HTTPS)",
                2,
            )
        settings = common.azure_settings(args.dry_run)
        print("WARNING: ACI QA is plain HTTP: non-sensitive data only", file=sys.stderr)
        if args.dry_run:
            package = common.read_package(args.package)
            image = common.planned_image(package, args.image_file)
            group = container_group(
                args.name,
                "<workspace location>",
                image,
                "<workspace registry>.azurecr.io",
                args.pull_identity or "<--pull-identity>",
                "<SCORING_API_KEY>",
                dns_label(args.name, settings.resource_group, settings.azure_subscription_id),
            )
            print(f"would deploy {image} (built from {args.package}), then PUT container group {args.name}:")
            print(common.to_json(group))
            return
        if not args.pull_identity:
            raise common.DeployError("--pull-identity is required: a user-assigned identity with AcrPull", 2)
        chosen = common.public_service_credential(settings, credential)
        url = deploy(args, settings, chosen, transport)
        common.write_text(args.url_file, url)
        print(f"container group {args.name}: {url}")

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
