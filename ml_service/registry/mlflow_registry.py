"""The model registry: MLflow, in a local SQLite store by default or an Azure ML workspace by URI.

Only what Azure ML's MLflow surface supports is used (its "supported capabilities" table): registered models,
model versions, version tags and searching versions by name. No aliases, no stages, no search by tag. The same
code runs on both stores.

A version's life, all in version tags:

* ``registration=pending`` with its owner (host, pid, process start) and a heartbeat while it is created;
  ``registration=complete`` once its files are in place and READY. Only complete versions can be production.
  A pending version is removed by a later registration only when its owner is known to be dead (same host) or
  its heartbeat is stale (another host): never a live run's.
* The production pointer is a claim tag named after the label (``production=<epoch>``), written in ONE tag write
  after the version is complete and after the promotion rule was checked against the production of that moment.
  Readers resolve production from the claims alone (``resolve_production``): the claims of the highest epoch,
  the best of them by the promotion rule (``promotion.is_better`` on the metric the claims were checked with),
  ties to the lowest version. A claim checked by the rule joins the current epoch; a forced claim (evaluation
  off, a rollback) and a model set built on a given production version open the next one.

Why that is compare-and-set without a lock: every metric claim was better than a production that was real when it
was read, and readers take the best claim of the epoch, so a claim written from a stale read can never put a worse
model in production; the writer re-reads after its write and, if another claim won, withdraws its own and says
why. The same holds over REST (Azure ML), where no lock spans processes on several machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml_service.registry.errors import RegistryError
from ml_service.registry.model_set import MANIFEST_FILE
from ml_service.registry.promotion import DIRECTIONS, decide, is_better
from ml_service.registry.tags import metrics_from_tags, metrics_to_tags
from ml_service.util.env_variables import Settings
from ml_service.util.files import FILE_MAP, file_map_digest, folder_sha256
from ml_service.util.tracking_uri import check_tracking_uri

DATA_FOLDER = "data/model"  # where an MLflow model written by ml_service.registry.mlflow_model keeps its data

STATE_TAG = "registration"
PENDING, COMPLETE = "pending", "complete"
OWNER_TAG = "registration.owner"
HEARTBEAT_TAG = "registration.heartbeat"
FILES_TAG = "files.sha256"  # sha256 of the version's file map (FILE_MAP inside its folder)
LOST = "lost"  # the value of a withdrawn claim: "<label>=lost", with the reason in "<label>.reason"
# A pending version whose owner cannot be checked (another host) is stale after this long without a heartbeat.
STALE_AFTER_S = 600.0
HEARTBEAT_EVERY_S = 30.0
SETTLE_S = 1.0  # a model-set claim waits this long for a concurrent one before checking who won
NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND")


@dataclass(frozen=True)
class ProductionModel:
    name: str
    version: str
    source: str
    tags: dict[str, str]
    run_id: str

    @property
    def metrics(self) -> dict[str, float]:
        return metrics_from_tags(self.tags)


@dataclass(frozen=True)
class Registration:
    """What a registration or promotion did. `version` is None when nothing was registered (production had
    already moved to a better model); `promoted` says whether this version holds production now; `reason` says
    why, in words for the log."""

    name: str
    version: str | None
    promoted: bool
    reason: str
    production_version: str | None


# --- store ------------------------------------------------------------------------------------------------


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes on this machine; the kernel drops it when its holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store and return a client.

    A new SQLite store is created and migrated by the first process to open it, under a file lock beside it:
    MLflow's schema migration is not safe against a second process migrating the same file at the same time
    (that left stores permanently broken). Later processes take the lock only for the check that nothing is left
    to migrate.
    """
    uri = settings.tracking_uri
    check_tracking_uri(settings)  # an unreachable server fails in seconds, not after MLflow's 4 minutes of retries
    # progress bars per artifact download flood the logs of pipelines that read model sets
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    path = _sqlite_path(uri)
    if path is None:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _file_lock(path.with_name(path.name + ".init.lock")):
        # the client opens the tracking store (creating or migrating the schema); the registry store opens on
        # its first call
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_model_versions(max_results=1)
    return client


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    """The experiment's id, creating it with artifacts under the project (not the current directory)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.artifact_root / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # created concurrently by another process
        if experiment is None:
            raise
        return experiment.experiment_id


# --- reading: versions and the production pointer ----------------------------------------------------------


def model_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of `name` with its tags (none when the name is not registered yet): a search by name, the
    one search Azure ML's MLflow surface offers for versions."""
    found: list[ModelVersion] = []
    token = None
    while True:
        try:
            page = client.search_model_versions(f"name='{name}'", page_token=token)
        except MlflowException as exc:
            if exc.error_code in NOT_FOUND:
                return []
            raise
        found += list(page)
        token = getattr(page, "token", None)
        if not token:
            return found


def _epoch(version: ModelVersion, label: str) -> int | None:
    value = version.tags.get(label, "")
    return int(value) if value.isdigit() else None


def _is_complete(version: ModelVersion) -> bool:
    return version.tags.get(STATE_TAG) == COMPLETE and version.status == "READY"


def _rule(version: ModelVersion, label: str) -> tuple[str, str] | None:
    metric, direction = version.tags.get(f"{label}.metric"), version.tags.get(f"{label}.direction")
    return (metric, direction) if metric and direction in DIRECTIONS else None


def _claim_order(claims: list[ModelVersion], label: str) -> list[ModelVersion]:
    """The claims of one epoch, winner first: by the rule they were checked with when they all share one and all
    carry its metric, else by version alone; ties always to the lowest version (it was registered first)."""
    by_version = sorted(claims, key=lambda v: int(v.version))
    rules = {_rule(v, label) for v in claims}
    if len(rules) != 1 or None in rules:
        return by_version
    metric, direction = rules.pop()
    values = [metrics_from_tags(v.tags).get(metric) for v in by_version]
    if any(value is None for value in values):
        return by_version
    ranked: list[tuple[float, ModelVersion]] = []
    for value, version in zip(values, by_version, strict=True):
        at = next((i for i, (other, _) in enumerate(ranked) if is_better(value, other, direction)), len(ranked))
        ranked.insert(at, (value, version))
    return [version for _, version in ranked]


def resolve_production(versions: list[ModelVersion], label: str) -> ModelVersion | None:
    """The production version among `versions` (one model's), from the claim tags alone; None if there is none.

    Pure and deterministic: every reader holding the same versions finds the same production, and a version
    becomes production by one tag write, so readers see the old or the new one, never one half-registered.
    """
    claims = [v for v in versions if _is_complete(v) and _epoch(v, label) is not None]
    if not claims:
        return None
    top = max(_epoch(v, label) or 0 for v in claims)
    return _claim_order([v for v in claims if _epoch(v, label) == top], label)[0]


def _as_production(version: ModelVersion) -> ProductionModel:
    return ProductionModel(version.name, str(version.version), version.source, dict(version.tags), version.run_id)


def production_model(client: MlflowClient, name: str, label: str) -> ProductionModel | None:
    """The version of `name` in production under `label` (the pointer's name, e.g. 'production'), or None."""
    version = resolve_production(model_versions(client, name), label)
    return _as_production(version) if version is not None else None


def production_models(client: MlflowClient, label: str) -> list[ProductionModel]:
    """Every registered model that has a version in production under `label`, sorted by name.

    One search of all versions (paged), not a search of registered models: MLflow 3's client adds a tag filter
    to the latter (to leave prompts out), and a search by tag is what Azure ML's MLflow surface does not offer.
    """
    by_name: dict[str, list[ModelVersion]] = {}
    token = None
    while True:
        page = client.search_model_versions(page_token=token)
        for version in page:
            by_name.setdefault(version.name, []).append(version)
        token = getattr(page, "token", None)
        if not token:
            break
    found = [resolve_production(versions, label) for _, versions in sorted(by_name.items())]
    return [_as_production(version) for version in found if version is not None]


def _process_start(pid: int) -> str:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat): with the pid, it names one process,
    not a later one that got the same pid. Empty where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}|{pid}|{_process_start(pid)}"


def owner_alive(owner: str) -> bool | None:
    """True or False for an owner on this host; None when it cannot be known here (another host)."""
    host, _, rest = owner.partition("|")
    pid_text, _, start = rest.partition("|")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return not start or _process_start(pid) == start


def is_abandoned(version: ModelVersion, now: float | None = None) -> bool:
    """A pending version whose registration is known to be over: its owner died (same host), or it has had no
    heartbeat for STALE_AFTER_S (an owner elsewhere, or none recorded). A live owner on this host keeps its
    version whatever its heartbeat (it may be paused), and complete versions are never abandoned."""
    if version.tags.get(STATE_TAG) != PENDING:
        return False
    alive = owner_alive(version.tags.get(OWNER_TAG, ""))
    if alive is not None:
        return not alive
    now = time.time() if now is None else now
    try:
        beat = float(version.tags.get(HEARTBEAT_TAG, ""))
    except ValueError:
        beat = (version.creation_timestamp or 0) / 1000
    return now - beat > STALE_AFTER_S


def remove_interrupted_versions(client: MlflowClient, name: str) -> list[str]:
    """Delete the pending versions that killed registrations left behind; never another live run's."""
    return _remove_abandoned(client, name, model_versions(client, name))


def _remove_abandoned(client: MlflowClient, name: str, versions: list[ModelVersion]) -> list[str]:
    removed = []
    for version in versions:
        if is_abandoned(version):
            try:
                client.delete_model_version(name, version.version)
            except MlflowException as exc:
                if exc.error_code not in NOT_FOUND:  # removed by another run's cleanup at the same moment
                    raise
            removed.append(str(version.version))
    return removed


# --- writing: register, then promote ---------------------------------------------------------------------------


def _check(
    candidate: ModelVersion | Mapping[str, float],
    current: ModelVersion | None,
    *,
    metric: str | None,
    direction: str | None,
    base_version: str | None,
    force: bool,
) -> tuple[bool, str]:
    """The promotion rule applied to the production of this moment."""
    if force:
        return True, "promotion forced (no comparison with production)"
    if base_version is not None or metric is None:
        if metric is None and base_version is None:
            raise ValueError("promotion needs metric and direction, base_version (a model set), or force=True")
        found = str(current.version) if current is not None else ""
        if found == base_version:
            return True, f"built on production version {base_version}" if base_version else "nothing in production"
        return False, (
            f"production moved to version {found or '(none)'} while this one was built on "
            f"version {base_version or '(none)'}: rerun to build on the new production"
        )
    assert direction is not None
    metrics = candidate if isinstance(candidate, Mapping) else metrics_from_tags(candidate.tags)
    incumbent = metrics_from_tags(current.tags) if current is not None else None
    decision = decide(metrics, incumbent, metric, direction, str(current.version) if current else None)
    return decision.promote, decision.reason


def _next_epoch(versions: list[ModelVersion], current: ModelVersion | None, label: str, rule) -> int:
    """A claim checked by the same rule as the current production joins its epoch; any other opens the next."""
    top = max((_epoch(v, label) or 0 for v in versions if _epoch(v, label) is not None), default=0)
    if current is not None and rule is not None and _rule(current, label) == rule:
        return _epoch(current, label) or top
    return top + 1


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    label: str,
    *,
    metric: str | None = None,
    direction: str | None = None,
    base_version: str | None = None,
    force: bool = False,
) -> Registration:
    """Move production under `label` onto a complete `version` if it is still better than production now.

    One of: `metric` and `direction` (the promotion rule against the production of this moment), `base_version`
    (a model set built on that production version, "" for none: taken only if production is still that one), or
    `force` (no comparison: evaluation disabled, or a rollback). Compare-and-set by claim, re-read and
    deterministic resolution (module docstring); the loser's claim is withdrawn and its reason says why.
    """
    version = str(version)
    if metric is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    rule = (metric, direction) if metric is not None and base_version is None else None
    if metric and direction:  # what readers compare claims by: written before the read, not between it and the claim
        client.set_model_version_tag(name, version, f"{label}.metric", metric)
        client.set_model_version_tag(name, version, f"{label}.direction", direction)
    versions = model_versions(client, name)
    mine = next((v for v in versions if str(v.version) == version), None)
    if mine is None or not _is_complete(mine):
        raise RegistryError(f"{name} version {version} is not a complete version: it cannot be production")
    current = resolve_production(versions, label)
    if current is not None and str(current.version) == version:
        return Registration(name, version, True, "already in production", version)
    ok, reason = _check(mine, current, metric=metric, direction=direction, base_version=base_version, force=force)
    if not ok:
        client.set_model_version_tag(name, version, f"{label}.reason", reason)
        return Registration(name, version, False, reason, str(current.version) if current else None)
    epoch = _next_epoch(versions, current, label, None if force else rule)
    client.set_model_version_tag(name, version, label, str(epoch))  # the one write that moves production
    if current is not None:
        client.set_model_version_tag(name, version, f"{label}.base", str(current.version))
    client.set_model_version_tag(name, version, f"{label}.reason", reason)
    if base_version is not None:
        return _confirm_set_claim(client, name, version, label, epoch, base_version, reason)
    winner = resolve_production(model_versions(client, name), label)
    if winner is not None and str(winner.version) == version:
        return Registration(name, version, True, reason, version)
    # another claim won while this one was written: withdraw it (it must not resurface) and say why
    winner_version = str(winner.version) if winner is not None else None
    if winner is None or force:
        why = f"version {winner_version} was promoted at the same moment and goes first"
    elif (_epoch(winner, label) or 0) > epoch:
        why = f"version {winner_version} was promoted without comparison (forced, or a model set) meanwhile"
    else:
        _, why = _check(mine, winner, metric=metric, direction=direction, base_version=base_version, force=False)
    lost = f"lost the promotion race to version {winner_version}: {why}"
    client.set_model_version_tag(name, version, f"{label}.reason", lost)
    client.set_model_version_tag(name, version, label, LOST)
    return Registration(name, version, False, lost, winner_version)


def _confirm_set_claim(
    client: MlflowClient, name: str, version: str, label: str, epoch: int, base_version: str, reason: str
) -> Registration:
    """A model set's claim stands only if no other claim shares its epoch: two sets built on the same production
    cannot both be right (each lacks the other's partitions), and which was written first is not knowable over
    REST. So each withdraws on seeing the other (production stays on their base: safe, and both say to rerun);
    the wait lets a concurrent claim, read before this one was written, land first."""
    time.sleep(SETTLE_S)
    versions = model_versions(client, name)
    rivals = [v for v in versions if _is_complete(v) and _epoch(v, label) is not None and str(v.version) != version]
    same = sorted(str(v.version) for v in rivals if _epoch(v, label) == epoch)
    newer = sorted(str(v.version) for v in rivals if (_epoch(v, label) or 0) > epoch)
    if not same and not newer:
        return Registration(name, version, True, reason, version)
    built_on = base_version or "(none)"
    why = (
        f"version {', '.join(same)} was built on version {built_on} at the same moment"
        if same
        else f"version {', '.join(newer)} took production meanwhile"
    )
    lost = f"lost the promotion race: {why}; rerun to build on the current production"
    client.set_model_version_tag(name, version, f"{label}.reason", lost)
    client.set_model_version_tag(name, version, label, LOST)
    current = resolve_production(model_versions(client, name), label)
    return Registration(name, version, False, lost, str(current.version) if current is not None else None)


def register_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    artifact_path: str,
    tags: Mapping[str, str],
    label: str | None = None,
    *,
    metrics: Mapping[str, float],
    lineage: Mapping[str, str],
    data_hash: str,
    folder: Path | None = None,
    metric: str | None = None,
    direction: str | None = None,
    base_version: str | None = None,
    force: bool = False,
    timeout_s: float = 300.0,
) -> Registration:
    """Register the run's artifact folder `artifact_path` as a new version of `name`, then promote it under
    `label` (skipped when `label` is None) by `promote`'s rule (metric/direction, base_version or force).

    Every version records `metrics` (as ``metric.<name>`` tags), `data_hash`, `lineage` (lineage.lineage_tags:
    git commit and tree state, build id and URI) and `tags`. With `folder` (the local copy of what was logged
    under `artifact_path`), the sha256 of each file is logged as ``<artifact_path>/files.sha256.json`` and its
    digest as the ``files.sha256`` tag, so a reader can check every file it downloads.

    Production is checked before a version is created (a candidate already beaten registers nothing) and again,
    compare-and-set, when it moves. If anything fails before the version is complete it is deleted again.
    Pending versions left by dead or stale registrations of `name` are removed first; live ones are left alone.
    """
    versions = model_versions(client, name)  # one search for every check (a remote call on a workspace)
    _remove_abandoned(client, name, versions)
    if run_id in [v.run_id for v in versions if v.tags.get(STATE_TAG) == COMPLETE]:
        raise RegistryError(f"run {run_id} is already registered as a version of {name!r}")
    if label is not None and not force:
        current = resolve_production(versions, label)
        ok, reason = _check(
            metrics, current, metric=metric, direction=direction, base_version=base_version, force=False
        )
        if not ok:
            return Registration(name, None, False, reason, str(current.version) if current else None)
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:
            client.get_registered_model(name)  # created concurrently; anything else propagates
    record = {
        **{k: str(v) for k, v in tags.items()},
        **{k: str(v) for k, v in lineage.items()},
        "data_hash": data_hash,
        **metrics_to_tags(metrics),
    }
    record = {k: v for k, v in record.items() if v != ""}  # an unknown value is an absent tag, not an empty one
    if folder is not None:
        files = folder_sha256(Path(folder))
        client.log_text(run_id, json.dumps(files, indent=1, sort_keys=True) + "\n", f"{artifact_path}/{FILE_MAP}")
        record[FILES_TAG] = file_map_digest(files)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    pending = {STATE_TAG: PENDING, OWNER_TAG: owner_id(), HEARTBEAT_TAG: repr(time.time())}
    version = client.create_model_version(name, source=source, run_id=run_id, tags={**record, **pending})
    number = str(version.version)
    try:
        _wait_until_ready(client, name, number, timeout_s)
        client.set_model_version_tag(name, number, STATE_TAG, COMPLETE)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            raise RegistryError(
                f"{name} version {number} was removed while this registration was stopped for more than "
                f"{STALE_AFTER_S:.0f} s (another run judged it abandoned): run the registration again"
            ) from None
        _delete_quietly(client, name, number)
        raise
    except BaseException:
        _delete_quietly(client, name, number)
        raise
    if label is None:
        return Registration(name, number, False, "registered without promotion", None)
    return promote(
        client, name, number, label, metric=metric, direction=direction, base_version=base_version, force=force
    )


def _wait_until_ready(client: MlflowClient, name: str, version: str, timeout_s: float) -> None:
    """Wait for the registry to finish the version, renewing its heartbeat so no other run takes it for dead."""
    deadline = time.monotonic() + timeout_s
    beat = time.monotonic()
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise RegistryError(f"{name} version {version}: registration failed in the registry")
        if time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version}: not ready after {timeout_s:.0f} s")
        if time.monotonic() - beat > HEARTBEAT_EVERY_S:
            client.set_model_version_tag(name, version, HEARTBEAT_TAG, repr(time.time()))
            beat = time.monotonic()
        time.sleep(0.5)


def _delete_quietly(client: MlflowClient, name: str, version: str) -> None:
    """Best-effort rollback; the original error is what the caller needs to see."""
    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:
        print(f"warning: could not delete half-registered {name} version {version}: {exc}")


# --- downloading -----------------------------------------------------------------------------------------------


def download_model(client: MlflowClient, model: ProductionModel, destination: Path) -> Path:
    """Copy a version's model folder to `destination` (a local folder) and return it."""
    destination.mkdir(parents=True, exist_ok=True)
    uri = client.get_model_version_download_uri(model.name, model.version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))


def production_manifest(client: MlflowClient, model: ProductionModel, destination: Path) -> dict:
    """The manifest of a registered version (its data folder's catalogue), downloading only that one file."""
    uri = f"{model.source.rstrip('/')}/{DATA_FOLDER}/{MANIFEST_FILE}"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"{model.name} version {model.version} has no {DATA_FOLDER}/{MANIFEST_FILE}: not a model this platform "
            f"registered ({' '.join(str(exc).split())[:200]})"
        ) from None
    return json.loads(Path(local).read_text())


def download_data(client: MlflowClient, model: ProductionModel, destination: Path) -> Path:
    """The data folder (manifest and models) of a registered version, downloaded to `destination`."""
    return download_model(client, model, destination) / DATA_FOLDER
