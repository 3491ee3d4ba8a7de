"""Build the package's image once, in the workspace's registry (ACR Tasks), and record it by content digest.

    python -m ml_service.scoring.deploy.image --package DIR --image-file DIR/image.json

The image file names `<registry>/mlops/scoring@sha256:<digest>` (the digest the run reports for the pushed
image), its registry and the package it was built from; every deployer given `--image-file` deploys exactly
that image (QA and production alike) and builds nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ml_service.scoring.deploy import common


def main(argv: list[str] | None = None, credential=None, transport=None) -> int:
    cli = common.argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--package", type=Path, required=True, help="package folder (ml_service.scoring.package)")
    cli.add_argument("--image-file", type=Path, required=True, help="write the image's reference by digest here")
    cli.add_argument("--dry-run", action="store_true", help="print what would be built; no credentials")
    args = cli.parse_args(argv)

    def body() -> None:
        settings = common.azure_settings(args.dry_run)
        package = common.read_package(args.package)
        if args.dry_run:
            print(f"would build {common.planned_image(package)} from {args.package} with an ACR Tasks run")
            return
        from azure.core import PipelineClient
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        if credential is None:
            from azure.identity import DefaultAzureCredential

            chosen = DefaultAzureCredential()
        else:
            chosen = credential
        kwargs = {"transport": transport} if transport is not None else {}
        registry = ContainerRegistryManagementClient(chosen, settings.azure_subscription_id, **kwargs)
        upload = PipelineClient(base_url="https://upload", **kwargs)
        _, resources, image = common.build_package_image(
            registry, upload, settings, args.package, common.poll_sleep(transport)
        )
        common.write_image_file(args.image_file, common.image_record(image, resources, package))
        print(f"image {image}: recorded in {args.image_file}")

    return common.run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
