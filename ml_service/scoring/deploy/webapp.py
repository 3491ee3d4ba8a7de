"""Deploy the packaged scoring image to Azure App Service (Web App for Containers).

Builds the image in the workspace's registry (ACR Tasks; with `--image-file` deploys the image
ml_service.scoring.deploy.image built once, by digest), creates or updates a Linux App Service plan
(`<name>-plan`) and the web app running the image with its system-assigned identity (granted AcrPull on the
registry), app settings (port 5001, SCORING_API_KEY, Application Insights) and the health check on /health.
App Service terminates HTTPS on the public `https://<name>.azurewebsites.net`.

First start: the site is restarted only once its identity's AcrPull assignment reads back, and App Service is
given START_TIME_LIMIT_S to start the container (WEBSITES_CONTAINER_START_TIME_LIMIT; its default is 230 s); a
smoke test of a new web app must wait at least that long (`--timeout`, smoke-test-template.yml).
"""

from __future__ import annotations

import sys
from typing import Any

from ml_service.scoring.deploy import common

PLAN_SKU = ("B1", "Basic")
START_TIME_LIMIT_S = 600  # an image with many models takes minutes to pull and load on a B1 plan


def plan_name(name: str) -> str:
    return f"{name}-plan"


def build_plan(location: str, sku: tuple[str, str] = PLAN_SKU):
    from azure.mgmt.web import models as m

    return m.AppServicePlan(
        location=location, kind="linux", reserved=True, sku=m.SkuDescription(name=sku[0], tier=sku[1])
    )


def app_settings(api_key: str, app_insights: str = "") -> dict[str, str]:
    settings = {
        "WEBSITES_PORT": str(common.SCORING_PORT),
        "SCORING_PORT": str(common.SCORING_PORT),
        "SCORING_API_KEY": api_key,
        "WEBSITES_ENABLE_APP_SERVICE_STORAGE": "false",
        "WEBSITES_CONTAINER_START_TIME_LIMIT": str(START_TIME_LIMIT_S),
    }
    if app_insights:
        settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] = app_insights
    return settings


def build_site(location: str, plan_id: str, image: str, settings: dict[str, str]):
    """The Site model sent to ARM (pure: tests assert it exactly)."""
    from azure.mgmt.web import models as m

    config = m.SiteConfig(
        linux_fx_version=f"DOCKER|{image}",
        acr_use_managed_identity_creds=True,
        health_check_path="/health",
        always_on=True,
        http20_enabled=True,
        min_tls_version="1.2",
        ftps_state="Disabled",
        app_settings=[m.NameValuePair(name=k, value=v) for k, v in sorted(settings.items())],
    )
    return m.Site(
        location=location,
        server_farm_id=plan_id,
        https_only=True,
        identity=m.ManagedServiceIdentity(type="SystemAssigned"),
        site_config=config,
        tags={"purpose": "scoring"},
    )


def deploy(args: Any, settings: Any, credential: Any, transport: Any = None) -> str:
    from azure.core import PipelineClient
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.web import WebSiteManagementClient

    kwargs = {"transport": transport} if transport is not None else {}
    registry = ContainerRegistryManagementClient(credential, settings.azure_subscription_id, **kwargs)
    upload = PipelineClient(base_url="https://upload", **kwargs)
    _, resources, image = common.build_package_image(
        registry, upload, settings, args.package, common.poll_sleep(transport), args.image_file
    )
    web = WebSiteManagementClient(credential, settings.azure_subscription_id, **kwargs)
    rg = settings.resource_group
    plan = web.app_service_plans.begin_create_or_update(
        rg, plan_name(args.name), build_plan(resources.location)
    ).result()
    values = app_settings(settings.scoring_api_key, settings.applicationinsights_connection_string)
    site = web.web_apps.begin_create_or_update(
        rg, args.name, build_site(resources.location, plan.id, image, values)
    ).result()
    principal = site.identity.principal_id if site.identity else None
    if not principal:
        raise common.DeployError(f"web app {args.name} has no managed identity to pull the image with")
    common.grant_acr_pull(registry, resources.registry_id, principal, common.poll_sleep(transport))
    web.web_apps.restart(rg, args.name)  # pull again now that the identity may pull
    return f"https://{site.default_host_name}"


def main(argv: list[str] | None = None, credential=None, transport=None) -> int:
    cli = common.parser(__doc__.splitlines()[0])
    args = cli.parse_args(argv)

    def body() -> None:
        settings = common.azure_settings(args.dry_run)
        if args.dry_run:
            package = common.read_package(args.package)
            image = common.planned_image(package, args.image_file)
            print(f"would deploy {image}, then PUT plan {plan_name(args.name)}:")
            print(common.to_json(build_plan("<workspace location>")))
            print(f"and PUT web app {args.name} (then grant its identity AcrPull on the registry):")
            values = app_settings("<SCORING_API_KEY>", "<APPLICATIONINSIGHTS_CONNECTION_STRING>")
            print(common.to_json(build_site("<workspace location>", "<plan id>", image, values)))
            return
        chosen = common.public_service_credential(settings, credential)
        url = deploy(args, settings, chosen, transport)
        common.write_text(args.url_file, url)
        print(f"web app {args.name}: {url}")

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
