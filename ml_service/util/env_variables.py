"""Typed settings read from the environment and `.env`, at call time (never at import).

One place lists every variable, its type, default and meaning; `.env.example` is checked against it by a test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A variable has a value that cannot be used; the message names it and what is accepted."""


def parse_bool(name: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    accepted = ", ".join(TRUE_WORDS + FALSE_WORDS)
    raise SettingsError(f"{name}={raw!r} is not a boolean; accepted values: {accepted}")


def parse_int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum}")
    return value


def _var(env: str, default: Any, doc: str, parser: Callable[[str, str], Any] | None = None) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc, "parser": parser})


def _positive_int(name: str, raw: str) -> int:
    return parse_int(name, raw, minimum=1)


def _port(name: str, raw: str) -> int:
    value = parse_int(name, raw, minimum=1)
    if value > 65535:
        raise SettingsError(f"{name}={raw!r} must be a TCP port between 1 and 65535")
    return value


@dataclass(frozen=True)
class Settings:
    """Every setting the platform reads. Empty string means "not set" for optional text values."""

    project_root: Path = _var("PROJECT_ROOT", Path("."), "Repository root; local paths are relative to it.")
    local_dir: str = _var("LOCAL_DIR", "local", "Folder (under the project root) for everything the local flow writes.")
    mlflow_tracking_uri: str = _var(
        "MLFLOW_TRACKING_URI",
        "",
        "MLflow tracking and registry URI. Empty: sqlite:///<project>/<LOCAL_DIR>/mlflow.db. "
        "An Azure ML workspace's azureml:// URI works through the same code.",
    )
    production_alias: str = _var(
        "PRODUCTION_ALIAS", "production", "Name of the version tag marking the served version (not an MLflow alias)."
    )
    run_evaluation: bool = _var(
        "RUN_EVALUATION", True, "Compare with the production model before promoting.", parse_bool
    )
    build_id: str = _var("BUILD_ID", "", "CI build id, recorded as a tag on registered models.")
    build_uri: str = _var("BUILD_URI", "", "CI build URI, recorded as a tag on registered models.")
    max_workers: int = _var("MAX_WORKERS", 0, "Processes for parallel training; 0 means one per core.", parse_int)
    dask_scheduler_address: str = _var(
        "DASK_SCHEDULER_ADDRESS",
        "",
        "tcp://host:port of a Dask scheduler; empty trains in a local process pool.",
    )
    scoring_port: int = _var("SCORING_PORT", 5001, "Port of the local scoring service (127.0.0.1).", _port)
    scoring_api_key: str = _var("SCORING_API_KEY", "", "When set, /score needs 'Authorization: Bearer <key>'.")
    scoring_workers: int = _var(
        "SCORING_WORKERS",
        1,
        "Scoring service processes (one per core serves about that many times more).",
        _positive_int,
    )
    scoring_cache_size: int = _var(
        "SCORING_CACHE_SIZE", 256, "Models kept loaded in the scoring service's LRU cache.", _positive_int
    )
    scoring_max_body_bytes: int = _var(
        "SCORING_MAX_BODY_BYTES",
        1_000_000,
        "Largest /score request body accepted (413 above).",
        _positive_int,
    )
    applicationinsights_connection_string: str = _var(
        "APPLICATIONINSIGHTS_CONNECTION_STRING", "", "Sends scoring traces to Application Insights when set."
    )
    azure_subscription_id: str = _var("AZURE_SUBSCRIPTION_ID", "", "Azure subscription of the ML workspace.")
    resource_group: str = _var("RESOURCE_GROUP", "", "Resource group of the ML workspace.")
    workspace_name: str = _var("WORKSPACE_NAME", "", "Azure ML workspace name.")
    aml_compute_cluster_name: str = _var("AML_COMPUTE_CLUSTER_NAME", "cpu-cluster", "Azure ML compute cluster.")
    aml_environment_name: str = _var("AML_ENVIRONMENT_NAME", "mlops-template-env", "Azure ML environment name.")

    @property
    def local_path(self) -> Path:
        return self.project_root / self.local_dir

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.local_path / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.local_path / "artifacts").resolve()

    @property
    def workers(self) -> int:
        return self.max_workers or os.cpu_count() or 1

    @property
    def azure_workspace_configured(self) -> bool:
        return bool(self.azure_subscription_id and self.resource_group and self.workspace_name)


def settings_variables() -> list[tuple[str, Any, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    return [(f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(Settings)]


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Settings from `environ` (default: the process environment) over values from `env_file` if it exists."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    kwargs: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata["env"]
        raw = values.get(name)
        if raw is None or (raw.strip() == "" and f.default != ""):
            continue
        parser = f.metadata["parser"]
        if parser is not None:
            kwargs[f.name] = parser(name, raw)
        elif isinstance(f.default, Path):
            kwargs[f.name] = Path(raw)
        else:
            kwargs[f.name] = raw.strip()
    return Settings(**kwargs)
