"""Promote models dev -> test -> prod through an Azure ML registry, keeping their lineage.

    python -m ml_service.registry.azureml_promote share --from dev --package DIR --promotion-file FILE [--dry-run]
    python -m ml_service.registry.azureml_promote fetch --promotion-file FILE --output DIR [--dry-run]

`share`: every model version in a scoring package that passed QA in the source environment (DIR/package/
manifest.json) is copied from that environment's workspace into the registry of environments.yml, under the
same name and version, with the workspace version's tags (run_id, data_hash, git_commit, build_id, build_uri,
metrics, ...) plus where it came from. It writes FILE, the promotion record the next stages deploy from.
It creates registry `Model` assets itself rather than calling `ml_client.models.share()`: share sends a
WorkspaceAssetReference, whose request body carries no tags, so the lineage would be lost.

`fetch`: downloads exactly the versions of FILE from the registry, after checking that each one's tags
still equal the recorded lineage, into DIR/<model name>/ plus DIR/models.json; then
`python -m ml_service.scoring.package --models-from DIR` packages them and the usual deployer deploys that
package to the target environment (test, prod), whose approvals the CI system enforces.

--dry-run needs no credentials: it prints the registry assets (validated by the Azure ML SDK) it would create
or download. Otherwise AZURE_SUBSCRIPTION_ID names the subscription and DefaultAzureCredential signs in.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_service.util.environments import DEFAULT_FILE, EnvironmentsError, load

PROMOTION_FORMAT = 1
FETCHED_MODELS_FILE = "models.json"
# Tags the promotion itself adds; every tag of the source version is kept as well.
SOURCE_TAGS = ("promoted_from_environment", "promoted_from_workspace", "source_version")
# The lineage a promoted model must carry (registration tags of every use case).
REQUIRED_LINEAGE = ("run_id", "data_hash")


class PromotionError(RuntimeError):
    """One line naming the problem; exit 1 (Azure) or 2 (usage)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    run_id: str = ""


def registry_asset_id(registry: str, name: str, version: str) -> str:
    return f"azureml://registries/{registry}/models/{name}/versions/{version}"


def workspace_model_path(subscription: str, resource_group: str, workspace: str, name: str, version: str) -> str:
    """The workspace model version as an asset path (what a dry run names; live runs use the version's own path)."""
    return (
        f"azureml://subscriptions/{subscription}/resourceGroups/{resource_group}/workspaces/{workspace}"
        f"/models/{name}/versions/{version}"
    )


def package_models(package: Path) -> list[ModelRef]:
    """The model versions of a scoring package (its package/manifest.json)."""
    candidates = [package / "package" / "manifest.json", package / "manifest.json"]
    manifest_file = next((c for c in candidates if c.is_file()), None)
    if manifest_file is None:
        raise PromotionError(f"{package}: no package/manifest.json; build it with ml_service.scoring.package", 2)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        refs = [ModelRef(m["name"], str(m["version"]), m.get("run_id") or "") for m in manifest["models"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PromotionError(f"{manifest_file}: not a scoring package manifest ({exc})", 2) from None
    if not refs:
        raise PromotionError(f"{manifest_file}: lists no model: nothing to promote", 2)
    return refs


def lineage_tags(
    source_tags: dict[str, str], ref: ModelRef, environment: str, workspace: str, build_id: str = ""
) -> dict[str, str]:
    """The registry version's tags: the source version's, plus where and by which build it was promoted."""
    tags = {str(k): str(v) for k, v in source_tags.items()}
    if ref.run_id and tags.setdefault("run_id", ref.run_id) != ref.run_id:
        raise PromotionError(f"{ref.name} v{ref.version}: run_id tag {tags['run_id']} != package's {ref.run_id}")
    tags.update(
        promoted_from_environment=environment,
        promoted_from_workspace=workspace,
        source_version=ref.version,
    )
    if build_id:
        tags["promotion_build_id"] = build_id
    return tags


def registry_model(ref: ModelRef, path: str, tags: dict[str, str], model_type: str = "custom_model", description=""):
    """The registry asset of one promoted version: same name and version, the source's files and tags."""
    from azure.ai.ml.entities import Model

    return Model(
        name=ref.name,
        version=ref.version,
        path=path,
        type=model_type,
        tags=dict(tags),
        description=description or f"{ref.name} v{ref.version}, promoted from {tags['promoted_from_environment']}",
    )


def validation_errors(model: Any) -> list[str]:
    """The Azure ML SDK's own schema check of a Model asset, offline: dump it and load it back."""
    import yaml
    from azure.ai.ml import load_model

    problems = [f"tag {k} missing" for k in REQUIRED_LINEAGE if k not in (model.tags or {})]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "model.yml"
        try:
            source.write_text(yaml.safe_dump(model._to_dict()), encoding="utf-8")
            loaded = load_model(source=source)
        except Exception as exc:  # noqa: BLE001 - the SDK raises several validation types; report them as text
            return problems + [" ".join(str(exc).split())[:300]]
    if loaded.tags != model.tags or loaded.version != model.version or loaded.name != model.name:
        problems.append("name, version or tags change on load")
    return problems


def promotion_record(registry: str, environment: str, models: list[Any], dry_run: bool = False) -> dict[str, Any]:
    return {
        "kind": "promotion",
        "format": PROMOTION_FORMAT,
        # A dry run's tags are placeholders: such a record is never fetched for real.
        "dry_run": dry_run,
        "registry": registry,
        "from_environment": environment,
        "models": [
            {
                "name": m.name,
                "version": str(m.version),
                "asset_id": registry_asset_id(registry, m.name, str(m.version)),
                "tags": dict(sorted(m.tags.items())),
            }
            for m in models
        ],
    }


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PromotionError(f"{path}: cannot read the promotion record ({exc})", 2) from None
    if record.get("kind") != "promotion" or not record.get("models"):
        raise PromotionError(f"{path}: not a promotion record written by `share`", 2)
    return record


def _write_json(path: Path, body: Any) -> None:
    """Atomically: a half-written record must never be deployed from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- live operations (need a subscription) --------------------------------------------------------


def _clients(config, environment: str | None, subscription: str):
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    registry = MLClient(credential, subscription_id=subscription, registry_name=config.registry)
    if environment is None:
        return None, registry
    env = config.get(environment)
    workspace = MLClient(credential, env.subscription_id or subscription, env.resource_group, env.workspace)
    return workspace, registry


def share(config, environment: str, refs: list[ModelRef], subscription: str, build_id: str) -> list[Any]:
    from azure.core.exceptions import ResourceNotFoundError

    env = config.get(environment)
    workspace_client, registry_client = _clients(config, environment, subscription)
    shared = []
    for ref in refs:
        source = workspace_client.models.get(ref.name, ref.version)
        tags = lineage_tags(dict(source.tags or {}), ref, environment, env.workspace, build_id)
        model = registry_model(ref, source.path, tags, source.type or "custom_model", source.description or "")
        try:
            existing = registry_client.models.get(ref.name, ref.version)
        except ResourceNotFoundError:
            existing = None
        if existing is not None:
            # A registry version is immutable: promoting the same version again is fine only if it is the same model.
            same = {k: v for k, v in (existing.tags or {}).items() if k != "promotion_build_id"}
            wanted = {k: v for k, v in tags.items() if k != "promotion_build_id"}
            if same != wanted:
                raise PromotionError(
                    f"{ref.name} v{ref.version} is already in registry {config.registry} with other lineage tags; "
                    "it is not the same model: rename or re-register it in the source workspace"
                )
            print(f"share: {ref.name} v{ref.version} already in {config.registry} (same lineage)")
            shared.append(existing)
            continue
        created = registry_client.models.create_or_update(model)
        print(f"share: {ref.name} v{ref.version} -> {registry_asset_id(config.registry, ref.name, ref.version)}")
        shared.append(created)
    return shared


def _model_root(folder: Path) -> Path:
    """`models.download` writes <path>/<name>/<basename of the asset path>/...: the model folder inside."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return _model_root(entries[0])
    return folder


def fetch(config, record: dict[str, Any], output: Path, subscription: str) -> list[dict[str, Any]]:
    _, registry_client = _clients(config, None, subscription)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    fetched = []
    try:
        for item in record["models"]:
            current = registry_client.models.get(item["name"], item["version"])
            if dict(current.tags or {}) != item["tags"]:
                raise PromotionError(
                    f"{item['name']} v{item['version']}: registry tags differ from the promotion record: not deploying"
                )
            download = staging / ".download" / item["name"]
            registry_client.models.download(item["name"], item["version"], download_path=str(download))
            shutil.move(str(_model_root(download / item["name"])), staging / item["name"])
            fetched.append(fetched_entry(item))
        shutil.rmtree(staging / ".download", ignore_errors=True)
        _write_json(staging / FETCHED_MODELS_FILE, {"registry": record["registry"], "models": fetched})
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return fetched


def fetched_entry(item: dict[str, Any]) -> dict[str, Any]:
    """One model of DIR/models.json, what `ml_service.scoring.package --models-from DIR` packages."""
    return {
        "name": item["name"],
        "version": item["version"],
        "source": item["asset_id"],
        "run_id": item["tags"].get("run_id", ""),
        "tags": item["tags"],
        "path": item["name"],
    }


# --- CLI ------------------------------------------------------------------------------------------


def _print_model(model: Any) -> None:
    problems = validation_errors(model)
    if problems:
        shown = "; ".join(problems)
        raise PromotionError(f"{model.name} v{model.version} fails the Azure ML SDK's validation: {shown}")
    print(json.dumps(model._to_dict(), indent=1, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    usage = "\n".join(line for line in __doc__.splitlines() if line.startswith("    python -m"))
    parser = argparse.ArgumentParser(
        prog="python -m ml_service.registry.azureml_promote",
        description=__doc__.splitlines()[0],
        epilog=f"commands:\n{usage}\n(each answers --help)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    share_cli = sub.add_parser("share", help="copy a QA-tested package's models from a workspace into the registry")
    share_cli.add_argument("--from", dest="source", required=True, help="source environment (environments.yml)")
    share_cli.add_argument("--package", type=Path, required=True, help="the scoring package that passed QA there")
    fetch_cli = sub.add_parser("fetch", help="download a promotion's models from the registry for packaging")
    fetch_cli.add_argument("--output", type=Path, required=True, help="folder for the models and models.json")
    for cli in (share_cli, fetch_cli):
        cli.add_argument("--promotion-file", type=Path, required=True, help="the promotion record (JSON)")
        cli.add_argument("--environments-file", type=Path, default=DEFAULT_FILE, help="default: environments.yml")
        cli.add_argument("--dry-run", action="store_true", help="print the registry assets; no credentials")
    args = parser.parse_args(argv)
    try:
        from ml_service.util.env_variables import load_settings

        settings = load_settings()
        config = load(args.environments_file)
        subscription = settings.azure_subscription_id
        if not args.dry_run and not subscription:
            raise PromotionError("AZURE_SUBSCRIPTION_ID is not set (or use --dry-run)", 2)
        if args.action == "share":
            env = config.get(args.source)
            if config.next_after(args.source) is None:
                raise PromotionError(f"{args.source} is the last environment of promotion: nothing to promote to", 2)
            refs = package_models(args.package)
            if args.dry_run:
                models = []
                for ref in refs:
                    path = workspace_model_path(
                        env.subscription_id or subscription or "<AZURE_SUBSCRIPTION_ID>",
                        env.resource_group,
                        env.workspace,
                        ref.name,
                        ref.version,
                    )
                    # Offline the workspace's tags are unknown: the package's run id stands for them.
                    source_tags = {"run_id": ref.run_id, "data_hash": "<from the workspace version>"}
                    tags = lineage_tags(source_tags, ref, args.source, env.workspace, settings.build_id)
                    models.append(registry_model(ref, path, tags))
                print(f"would copy {len(models)} model version(s) from {env.workspace} to registry {config.registry}:")
                for model in models:
                    _print_model(model)
            else:
                models = share(config, args.source, refs, subscription, settings.build_id)
            record = promotion_record(config.registry, args.source, models, dry_run=args.dry_run)
            _write_json(args.promotion_file, record)
            print(f"share: promotion record {args.promotion_file}")
        else:
            record = read_record(args.promotion_file)
            if record["registry"] != config.registry:
                raise PromotionError(
                    f"{args.promotion_file}: registry {record['registry']} is not environments.yml's {config.registry}",
                    2,
                )
            if args.dry_run:
                print(f"would download from registry {config.registry} into {args.output}:")
                for item in record["models"]:
                    print(f"  {item['asset_id']} (run {item['tags'].get('run_id', '?')})")
                return 0
            if record.get("dry_run"):
                raise PromotionError(f"{args.promotion_file} was written by share --dry-run: run share for real", 2)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            fetched = fetch(config, record, args.output.resolve(), subscription)
            print(f"fetch: {len(fetched)} model(s) in {args.output}")
    except (PromotionError, EnvironmentsError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
