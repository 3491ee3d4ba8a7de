"""Typed settings read from the environment and `.env`, at call time (never at import).

One place lists every variable, its type, default and meaning (the `Settings` fields below); `.env.example` is
checked against it by a test. pydantic validates the values; this module only reads the variables, turns a
validation error into one line naming the variable, and warns about `.env` entries that look like misspelt
settings.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class SettingsError(ValueError):
    """A variable has a value that cannot be used; the message names it and what is accepted."""


def _bool_word(value: Any) -> Any:
    # pydantic's own bool also takes t/f/y/n; the project accepts exactly the words .env.example documents
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"is not a boolean; accepted values: {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def parse_bool(name: str, raw: str) -> bool:
    """`raw` as a boolean, or SettingsError naming `name` and the accepted words."""
    try:
        return _bool_word(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} {exc}") from None


Bool = Annotated[bool, BeforeValidator(_bool_word)]
Count = Annotated[int, Field(ge=0)]
PositiveCount = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
BatchWait = Annotated[float, Field(ge=0, le=100)]
Rate = Annotated[float, Field(ge=0, le=1)]


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's --cpus)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _var(env: str, default: Any, doc: str) -> Any:
    return Field(default=default, description=doc, json_schema_extra={"env": env})


# The tracking URI forms MLflow (with the azureml-mlflow plugin) can use: scheme -> what must follow it.
TRACKING_URI_FORMS = {
    "sqlite": "sqlite:///<path>",
    "file": "file:<path>",
    "http": "http://<host>[:port]",
    "https": "https://<host>[:port]",
    "azureml": "azureml://<region>.api.azureml.ms/mlflow/v1.0/...",
    "databricks": "databricks[://<profile>]",
    "databricks-uc": "databricks-uc[://<profile>]",
    # MLflow's SQLAlchemy stores (the driver package must be installed); `postgresql+psycopg2://` etc. too
    "postgresql": "postgresql://<user>@<host>/<db>",
    "mysql": "mysql://<user>@<host>/<db>",
    "mssql": "mssql://<user>@<host>/<db>",
}


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot use `uri` as a tracking URI (None if its form is fine; reachability is not checked)."""
    accepted = "sqlite:///, file:, http(s)://, azureml://, databricks, or a database URI (postgresql:// ...)"
    if uri in ("databricks", "databricks-uc"):
        return None
    if ":" not in uri:
        return f"has no scheme; use {accepted}, or leave it empty for <LOCAL_DIR>/mlflow.db"
    scheme, rest = uri.split(":", 1)
    dialect = scheme.split("+", 1)[0].lower()
    if dialect not in TRACKING_URI_FORMS:
        close = difflib.get_close_matches(dialect, TRACKING_URI_FORMS, n=1, cutoff=0.6)
        hint = f" (did you mean {TRACKING_URI_FORMS[close[0]]}?)" if close else ""
        return f"has an unknown scheme {scheme + ':'!r}{hint}; use {accepted}"
    form = TRACKING_URI_FORMS[dialect]
    if dialect == "sqlite" and not (rest.startswith("///") and len(rest) > 3):
        return f"is not a SQLite URI: write {form} (three slashes, then the file's path)"
    if dialect == "file" and not rest.strip("/"):
        return f"names no folder: write {form}"
    if dialect in ("http", "https", "azureml") and not (rest.startswith("//") and urlsplit(uri).hostname):
        return f"names no host: write {form}"
    return None


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
    run_evaluation: Bool = _var("RUN_EVALUATION", True, "Compare with the production model before promoting.")
    build_id: str = _var("BUILD_ID", "", "CI build id, recorded as a tag on registered models.")
    build_uri: str = _var("BUILD_URI", "", "CI build URI, recorded as a tag on registered models.")
    max_workers: Count = _var("MAX_WORKERS", 0, "Processes for parallel training; 0 means one per core.")
    dask_scheduler_address: str = _var(
        "DASK_SCHEDULER_ADDRESS",
        "",
        "tcp://host:port of a Dask scheduler; empty trains in a local process pool.",
    )
    scoring_port: Port = _var("SCORING_PORT", 5001, "Port of the local scoring service (127.0.0.1).")
    scoring_api_key: str = _var("SCORING_API_KEY", "", "When set, /score needs 'Authorization: Bearer <key>'.")
    scoring_workers: Count = _var(
        "SCORING_WORKERS",
        0,
        "Scoring service processes; 0 means one per available core (what served best in bench/bench_scoring.py).",
    )
    scoring_batch_max_rows: PositiveCount = _var(
        "SCORING_BATCH_MAX_ROWS", 512, "Most rows in one micro-batch of concurrent /score requests."
    )
    scoring_batch_wait_ms: BatchWait = _var(
        "SCORING_BATCH_WAIT_MS",
        2.0,
        "Most milliseconds a busy model's next batch waits for more of its requests (never longer than one of its "
        "predict calls costs; a lone request never waits; 0: never).",
    )
    scoring_max_header_bytes: PositiveCount = _var(
        "SCORING_MAX_HEADER_BYTES", 16384, "Largest request line + headers accepted (431 above)."
    )
    scoring_read_timeout: PositiveCount = _var(
        "SCORING_READ_TIMEOUT",
        10,
        "Seconds a connection may take to send a whole request, or stay silent once open (then it is closed).",
    )
    scoring_max_connections: PositiveCount = _var(
        "SCORING_MAX_CONNECTIONS", 512, "Concurrent connections per worker (503 beyond)."
    )
    scoring_instance_id: str = _var(
        "SCORING_INSTANCE_ID",
        "",
        "Echoed by /health when set: lets a launcher check that the server answering is the one it started.",
    )
    scoring_cache_size: PositiveCount = _var(
        "SCORING_CACHE_SIZE", 256, "Models kept loaded in the scoring service's LRU cache."
    )
    scoring_max_body_bytes: PositiveCount = _var(
        "SCORING_MAX_BODY_BYTES",
        1_000_000,
        "Largest /score request body accepted (413 above).",
    )
    scoring_collect_rate: Rate = _var(
        "SCORING_COLLECT_RATE",
        0.0,
        "Share of answered /score requests whose rows and predictions are collected for monitoring, 0 to 1 "
        "(0: off, no request body is ever written).",
    )
    scoring_collect_dir: str = _var(
        "SCORING_COLLECT_DIR",
        "local/monitoring/collected",
        "Folder (relative to PROJECT_ROOT) of the collected JSONL files (on an Azure ML online deployment "
        "with data collection: Azure's data collector instead).",
    )
    scoring_collect_max_bytes: PositiveCount = _var(
        "SCORING_COLLECT_MAX_BYTES", 16_777_216, "Size at which a collected file is closed and the next one begun."
    )
    applicationinsights_connection_string: str = _var(
        "APPLICATIONINSIGHTS_CONNECTION_STRING", "", "Sends scoring traces to Application Insights when set."
    )
    azure_subscription_id: str = _var("AZURE_SUBSCRIPTION_ID", "", "Azure subscription of the ML workspace.")
    resource_group: str = _var("RESOURCE_GROUP", "", "Resource group of the ML workspace.")
    workspace_name: str = _var("WORKSPACE_NAME", "", "Azure ML workspace name.")
    aml_compute_cluster_name: str = _var("AML_COMPUTE_CLUSTER_NAME", "cpu-cluster", "Azure ML compute cluster.")
    aml_environment_name: str = _var("AML_ENVIRONMENT_NAME", "mlops-template-env", "Azure ML environment name.")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri_form(cls, uri: str) -> str:
        problem = tracking_uri_problem(uri) if uri else None
        if problem:
            raise ValueError(problem)
        return uri

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
    def scoring_worker_count(self) -> int:
        return self.scoring_workers or available_cores()

    @property
    def azure_workspace_configured(self) -> bool:
        return bool(self.azure_subscription_id and self.resource_group and self.workspace_name)


def _fields() -> dict[str, tuple[str, Any]]:
    """attribute -> (variable, pydantic FieldInfo), in declaration order."""
    return {name: (info.json_schema_extra["env"], info) for name, info in Settings.__pydantic_fields__.items()}


def settings_variables() -> list[tuple[str, Any, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    return [(env, info.default, info.description) for env, info in _fields().values()]


# Variables the project reads outside Settings (internal or debugging switches): known, so never warned about.
OTHER_VARIABLES = ("SCORING_PACKAGE_DIR", "MLOPS_DEBUG")
# Name families of the project's settings: a .env entry starting with one of these is meant for this project.
FAMILIES = ("MLFLOW_", "SCORING_", "AML_", "AZURE_", "BUILD_", "DASK_", "APPLICATIONINSIGHTS_")
# The families only this project uses. MLflow, the Azure SDKs, Azure DevOps (BUILD_*) and Dask define many
# variables of their own in theirs, so a real environment variable is only questioned in these.
OWN_FAMILIES = ("SCORING_", "AML_")
NEAR_MISS_CUTOFF = 0.8
_warned: set[tuple[str, str]] = set()  # (source, variable) already warned about in this process


def closest_setting(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1, cutoff=NEAR_MISS_CUTOFF)
    return close[0] if close else None


def unknown_variable_warnings(from_file: Mapping[str, str], environ: Mapping[str, str], env_file: str) -> list[str]:
    """One warning for each variable that looks meant for this project but is not one of its settings.

    A `.env` entry is questioned when it is a near miss of a setting or starts with a settings family prefix
    (the file exists for this project, and it is not exported: a variable there that is no setting has no
    effect at all). A real environment variable only when it is a near miss in one of the project's own
    families: the environment holds many unrelated variables, including other tools' MLFLOW_*, AZURE_* or
    BUILD_* ones.
    """
    settings = [env for env, _ in _fields().values()]
    known = {*settings, *OTHER_VARIABLES}
    found = []
    for name in from_file:
        if name in known:
            continue
        closest = closest_setting(name, settings)
        family = next((prefix for prefix in FAMILIES if name.startswith(prefix)), None)
        if closest is None and family is not None:
            members = [s for s in settings if s.startswith(family)]
            closest = difflib.get_close_matches(name, members, n=1, cutoff=0.0)[0]
        if closest is not None:
            message = f"{env_file}: {name} is not a setting and is ignored; did you mean {closest}?"
            found.append((env_file, name, message))
    for name in environ:
        if name in known or name in from_file or not name.startswith(OWN_FAMILIES):
            continue
        closest = closest_setting(name, settings)
        if closest is not None:
            found.append(("environment", name, f"environment: {name} is not a setting; did you mean {closest}?"))
    messages = []
    for source, name, message in found:
        if (source, name) not in _warned:
            _warned.add((source, name))
            messages.append(message)
    return messages


def _one_line(error: ValidationError, raw: Mapping[str, str]) -> str:
    """A pydantic error as one line per bad variable, joined on one line: `NAME='value' what is wrong`."""
    variables = {name: env for name, (env, _) in _fields().items()}
    parts = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        env = variables.get(name, name)
        shown = f"{env}={raw[env]!r}" if env in raw else f"{env}={item.get('input')!r}"
        kind, context = item["type"], item.get("ctx", {})
        if kind in ("int_parsing", "int_from_float", "int_type"):
            reason = "is not a whole number"
        elif kind == "greater_than_equal":
            reason = f"must be at least {context['ge']}"
        elif kind == "less_than_equal":
            reason = f"must be at most {context['le']}"
        elif kind == "value_error":
            reason = str(context["error"])
        else:
            reason = item["msg"][:1].lower() + item["msg"][1:]
        parts.append(f"{shown} {reason}")
    return "; ".join(" ".join(part.split()) for part in parts)


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Settings from `environ` (default: the process environment) over values from `env_file` if it exists.

    A bad value raises SettingsError with one line naming the variable; `.env` entries (and, in the project's
    own families, environment variables) that look like misspelt settings get a warning on stderr, once per
    process.
    """
    from_file: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    environment = os.environ if environ is None else environ
    values = {**from_file, **environment}
    raw: dict[str, str] = {}
    kwargs: dict[str, Any] = {}
    for name, (env, info) in _fields().items():
        value = values.get(env)
        # an empty value means "not set": the default, except for text whose default is itself empty
        if value is None or (value.strip() == "" and info.default != ""):
            continue
        raw[env] = value
        kwargs[name] = value.strip()
    for message in unknown_variable_warnings(from_file, environment, str(env_file)):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, raw)) from None
