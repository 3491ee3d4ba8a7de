"""Write one self-contained build context for the scoring image: every production model, the code, the pins.

    python -m ml_service.scoring.package --output DIR [--use-case NAME[,NAME]]

Without ``--use-case`` every production model is packaged; with it (use cases or groups of the declaration) only
the production models of those use cases (their ``model_name``).

Layout of ``DIR`` (``docker build DIR`` builds the image; ``serve --package DIR`` serves it locally)::

    Dockerfile            BASE_IMAGE (pinned by digest), non-root, serves /app/package on 0.0.0.0:5001 in the image
    sample_request.json   one ``POST /score`` body per packaged model, from its input example (pre-traffic checks)
    requirements.txt      the lines of requirements.lock the service and the models need, hashed (see below)
    package/manifest.json each model: name, version, source, kind, metrics, sha256 of every file (hashed from the
                          files downloaded from the registry; the service loads a model only if they match)
    package/models/<name>/...  the production version's files (a model folder or a model set)
    ml_service/...        the serving subset (util, registry readers, scoring; not MLflow, not the deployers)
    <use case>/...        every use-case package's .py/.json files (pickled models import their classes)

Deterministic: the same registry state gives a byte-identical ``manifest.json`` (sorted, no time stamps).
The folder is built beside ``DIR`` and renamed into place, so ``DIR`` is never half-written; an existing
``DIR`` is replaced only if it is a previous package.

requirements.txt: the closure of the service's top-level packages (``SERVICE_PACKAGES``) plus the model
libraries the pickles reference (``MODEL_LIBRARIES``, found by scanning each ``model.pkl`` for the module
name), following the ``# via`` comments of ``requirements.lock`` downwards; the pins are then given the sha256
of their files on the index (``hashed_requirements``), so the image build installs exactly those files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ml_service.registry.mlflow_model import data_path
from ml_service.registry.model_set import MODEL_FILE, read_manifest
from ml_service.scoring.model_store import PACKAGE_DIR, PACKAGE_MANIFEST
from ml_service.util.files import FILE_MAP, file_map_digest, folder_sha256, verify_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FORMAT = 1
SERVICE_PACKAGES = (
    "fastapi",
    "uvicorn",
    "orjson",
    "prometheus-client",
    "azure-monitor-opentelemetry",
    "fastapi-offline",
    "azureml-ai-monitoring",  # Azure ML's data collector client (inference data collection on online endpoints)
    "python-dotenv",
    "numpy",
    "pandas",
    "scikit-learn",
    "joblib",
    "pyyaml",
)
MODEL_LIBRARIES = ("lightgbm", "xgboost", "catboost", "flaml", "statsmodels", "prophet", "skops")
SERVICE_CODE = (
    "ml_service/__init__.py",
    "ml_service/util/__init__.py",
    "ml_service/util/env_variables.py",
    "ml_service/util/files.py",
    "ml_service/registry/__init__.py",
    "ml_service/registry/errors.py",
    "ml_service/registry/mlflow_model.py",
    "ml_service/registry/mlops_pyfunc_model.py",
    "ml_service/registry/model_set.py",
    "ml_service/monitoring/__init__.py",
    "ml_service/monitoring/collect.py",
    "ml_service/monitoring/collected.py",
    "ml_service/scoring/__init__.py",
    "ml_service/scoring/app.py",
    "ml_service/scoring/azureml_score.py",
    "ml_service/scoring/batching.py",
    "ml_service/scoring/fast_predict.py",
    "ml_service/scoring/http_guard.py",
    "ml_service/scoring/inputs.py",
    "ml_service/scoring/model_reader.py",
    "ml_service/scoring/model_store.py",
    "ml_service/scoring/serve.py",
)
NOT_USE_CASES = {"ml_service", "tests", "bootstrap", "bench", "docs", "environment_setup", "local"}
PORT = 5001

# The base image, pinned by content digest so every build starts from the same bytes (a tag such as 3.11-slim
# moves with each Debian or Python patch). Refresh it deliberately, then commit: the digest of the multi-arch
# index, from `docker buildx imagetools inspect python:3.11-slim` (first "Digest:") or `crane digest
# python:3.11-slim`. `--base-image` overrides it for one package.
BASE_IMAGE = "python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7"
_PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")

DOCKERFILE = """\
# Written by ml_service.scoring.package: every production model behind one API.
FROM {base_image}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt /app/requirements.txt
# --require-hashes: pip installs exactly the locked files (every line carries its sha256), and fails on any
# dependency the file does not pin.
RUN pip install --require-hashes -r /app/requirements.txt \\
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin scoring
COPY . /app
USER 10001
# One worker process per core the container may use (0), what served best in bench/bench_scoring.py.
ENV SCORING_WORKERS=0
# Inference data collection is off in the image (docs/monitoring.md); an online deployment turns it on with
# SCORING_COLLECT_RATE, and Azure's data collector then receives the records.
ENV SCORING_COLLECT_RATE=0
EXPOSE {port}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4)"]
CMD ["python", "-m", "ml_service.scoring.serve", "--package", "/app/package", "--host", "0.0.0.0", "--port", "{port}"]
"""


def dockerfile(base_image: str = BASE_IMAGE) -> str:
    """The package's Dockerfile, from a base image pinned by digest (ValueError for a floating tag)."""
    if not _PINNED_IMAGE.match(base_image):
        raise ValueError(f"base image {base_image!r} is not pinned by digest: give NAME@sha256:<64 hex digits>")
    return DOCKERFILE.format(base_image=base_image, port=PORT)


_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> dict[str, tuple[str, set[str]]]:
    """``{package: (requirement line, {packages it is required by})}`` from a uv/pip-compile lock file."""
    packages: dict[str, tuple[str, set[str]]] = {}
    current: str | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        match = _REQUIREMENT.match(raw)
        if match:
            current = canonical(match.group(1))
            packages[current] = (raw.rstrip(), set())
            in_via = False
            continue
        if current is None or not line.startswith("#"):
            continue
        comment = line.lstrip("#").strip()
        if comment.startswith("via"):
            rest = comment[3:].strip()
            in_via = not rest
            if rest:
                packages[current][1].add(canonical(rest.split()[0]))
        elif in_via and comment:
            packages[current][1].add(canonical(comment.split()[0]))
    return packages


def requirement_closure(lock_text: str, roots: list[str]) -> list[str]:
    """Lock lines of ``roots`` and everything they need (transitively), sorted; unknown roots are skipped."""
    packages = parse_lock(lock_text)
    children: dict[str, set[str]] = {}
    for name, (_, parents) in packages.items():
        for parent in parents:
            children.setdefault(parent, set()).add(name)
    wanted, todo = set(), [canonical(r) for r in roots if canonical(r) in packages]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(children.get(name, ()))
    return [packages[name][0] for name in sorted(wanted)]


IMAGE_PLATFORM = "x86_64-manylinux_2_28"  # the image's platform (linux/amd64, glibc of Debian bookworm)


def hashed_requirements(lines: list[str]) -> str:
    """The pinned ``lines`` with the sha256 of every file PyPI holds for each pin (``--hash=sha256:...``), for
    ``pip install --require-hashes``: `uv pip compile --generate-hashes --no-deps` of exactly these pins for the
    image's Python and platform (markers resolved; uv's cache answers when it has seen them). RuntimeError if
    uv cannot (no index reachable and nothing cached)."""
    uv = Path(sys.executable).parent / "uv"
    command = [str(uv) if uv.is_file() else (shutil.which("uv") or "uv"), "pip", "compile", "-", "--no-deps"]
    command += ["--generate-hashes", "--python-version", "3.11", "--python-platform", IMAGE_PLATFORM]
    command += ["--no-header", "--no-annotate", "--quiet"]
    try:
        result = subprocess.run(command, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot hash the requirements with uv ({exc}); run make setup") from None
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[:300]
        raise RuntimeError(f"uv pip compile --generate-hashes failed: {detail}")
    text = result.stdout
    pins = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    unhashed = [line.split()[0] for line in pins if not line.rstrip().endswith("\\")]
    if not pins or unhashed:
        raise RuntimeError(f"uv gave no hash for {', '.join(unhashed) or 'any requirement'}")
    return text


def model_libraries(model_files: list[Path]) -> list[str]:
    """Which of ``MODEL_LIBRARIES`` the pickles reference (their module names appear in the pickle stream)."""
    found: set[str] = set()
    for path in model_files:
        data = path.read_bytes()
        found.update(lib for lib in MODEL_LIBRARIES if lib.encode() in data)
    return sorted(found)


def use_case_packages(root: Path = REPO_ROOT) -> list[str]:
    """The top-level packages of every declared use case's code (pickled models import their classes)."""
    from ml_service.config import declared_use_cases, load_config

    return sorted({load_config(name, root).code.split(":")[0].split(".")[0] for name in declared_use_cases(root)})


def _copy_code(root: Path, target: Path) -> None:
    """The serving code from where ml_service runs (REPO_ROOT), the use cases from the project in use (`root`)."""
    for rel in SERVICE_CODE:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / rel, target / rel)
    for package in use_case_packages(root):
        for path in sorted((root / package).rglob("*")):
            rel = path.relative_to(root)
            skipped = "__pycache__" in rel.parts or "tests" in rel.parts  # a model imports neither
            if path.suffix in (".py", ".json") and not skipped and path.is_file():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / rel)


def _check_registered_files(model: Any, folder: Path) -> None:
    """The downloaded files are the ones registered: the file map's digest is the version's tag, and every file
    matches the map (a version registered without a map is packaged as it is)."""
    from ml_service.registry.mlflow_registry import FILES_TAG

    path = folder / FILE_MAP
    if FILES_TAG not in model.tags and not path.is_file():
        return
    files = json.loads(path.read_text()) if path.is_file() else {}
    problems = [] if file_map_digest(files) == model.tags.get(FILES_TAG) else [f"{FILE_MAP}: digest differs"]
    problems += verify_folder(folder, files)
    if problems:
        shown = "; ".join(problems[:5])
        raise RuntimeError(f"{model.name} version {model.version}: files differ from the registered ones: {shown}")


SAMPLE_REQUESTS = "sample_request.json"


def sample_requests(package_dir: Path) -> list[dict[str, Any]]:
    """One ``POST /score`` body per packaged model, its rows the model's input example (``sample_input``, else a
    row built from its input columns); a model set is sampled by its first partition model."""
    from ml_service.scoring.model_store import entries_for_folder
    from ml_service.util.smoke_test_scoring_service import sample_rows

    manifest = json.loads((package_dir / PACKAGE_MANIFEST).read_text(encoding="utf-8"))
    requests = []
    for item in manifest["models"]:
        entries = entries_for_folder(item["name"], item["version"], package_dir / item["path"], item.get("metrics"))
        if not entries:
            raise RuntimeError(f"model {item['name']}: nothing servable in the package")
        rows = sample_rows(entries[0].metadata())
        if not rows or not all(rows):
            raise RuntimeError(f"model {item['name']}: no input example or input columns to build a sample request")
        requests.append({"model_name": entries[0].name, "data": rows})
    return requests


def fetched_models(folder: Path) -> list[Any]:
    """The models `ml_service.registry.azureml_promote fetch` downloaded from an Azure ML registry (models.json)."""
    from ml_service.registry.mlflow_registry import ProductionModel

    try:
        listed = json.loads((folder / "models.json").read_text(encoding="utf-8"))["models"]
        models = [
            ProductionModel(m["name"], str(m["version"]), m["source"], dict(m["tags"]), m["run_id"]) for m in listed
        ]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{folder}/models.json: not written by azureml_promote fetch ({exc})") from None
    missing = [m.name for m in models if not (folder / m.name).is_dir()]
    if missing:
        raise RuntimeError(f"{folder}: no model folder for {', '.join(missing)}")
    return models


def model_names(use_cases: list[str], root: Path) -> set[str]:
    """The registered names (``model_name``) of these declared use cases."""
    from ml_service.config import load_config

    return {load_config(name, root).model_name for name in use_cases}


def build(
    settings: Any,
    output: Path,
    root: Path = REPO_ROOT,
    models_from: Path | None = None,
    use_cases: list[str] | None = None,
    base_image: str = BASE_IMAGE,
) -> dict[str, Any]:
    """Write the build context to ``output`` (atomically) and return its manifest; RuntimeError if no model.

    The models are the registry's production versions, or with ``models_from`` the ones fetched from an Azure ML
    registry into that folder (promotion to test and prod: exactly the promoted versions, with their lineage);
    with ``use_cases``, only those use cases' models."""
    from ml_service.registry.mlflow_registry import connect, download_model, production_models

    dockerfile(base_image)  # a floating base image is refused before anything is downloaded
    if models_from is not None:
        client = None
        models = fetched_models(Path(models_from))
    else:
        client = connect(settings)
        models = production_models(client, settings.production_alias)
    if use_cases is not None:
        wanted = model_names(use_cases, root)
        models = [m for m in models if m.name in wanted]
        if not models:
            raise RuntimeError(
                f"no model in production for use case {', '.join(use_cases)} (models {', '.join(sorted(wanted))}):"
                " nothing to package"
            )
    if not models:
        raise RuntimeError(f"no model in production (alias {settings.production_alias!r}): nothing to package")
    output = Path(output).resolve()
    if output.exists() and not (output / PACKAGE_DIR / PACKAGE_MANIFEST).is_file():
        if not output.is_dir() or any(output.iterdir()):
            raise RuntimeError(f"{output} exists and is not a previous package: refusing to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        entries = []
        model_files: list[Path] = []
        for model in models:
            if "/" in model.name or model.name in (".", ".."):
                raise RuntimeError(f"model name {model.name!r} cannot be a folder name")
            if client is None:
                download = Path(shutil.copytree(Path(models_from) / model.name, staging / ".download" / model.name))
            else:
                download = download_model(client, model, staging / ".download" / model.name)
            folder = staging / PACKAGE_DIR / "models" / model.name
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(download), folder)
            entry: dict[str, Any] = {
                "name": model.name,
                "version": model.version,
                "source": model.source,
                "run_id": model.run_id,
                "path": f"models/{model.name}",
            }
            _check_registered_files(model, folder)  # before any of its files is read
            if client is None:
                entry["lineage"] = dict(sorted(model.tags.items()))
            manifest = read_manifest(data_path(folder))
            entry["kind"] = manifest["kind"]
            if manifest["kind"] == "model_set":
                entry["partitions"] = len(manifest["models"])
            else:
                entry["metrics"] = dict(sorted(next(iter(manifest["models"].values())).get("metrics", {}).items()))
            model_files += [data_path(folder) / item["path"] / MODEL_FILE for item in manifest["models"].values()]
            entry["files"] = folder_sha256(folder)
            entries.append(entry)
        shutil.rmtree(staging / ".download", ignore_errors=True)
        manifest = {
            "kind": "scoring_package",
            "format": PACKAGE_FORMAT,
            "production_alias": settings.production_alias,
            "models": entries,
        }
        text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        (staging / PACKAGE_DIR / PACKAGE_MANIFEST).write_text(text)
        samples = sample_requests(staging / PACKAGE_DIR)
        (staging / SAMPLE_REQUESTS).write_text(json.dumps(samples, indent=1, sort_keys=True) + "\n")
        _copy_code(root, staging)
        roots = [*SERVICE_PACKAGES, *model_libraries(model_files)]
        lines = requirement_closure((root / "requirements.lock").read_text(), roots)
        header = "# Written by ml_service.scoring.package from requirements.lock: the service's and models' pins,\n"
        header += "# each with the sha256 of its files (pip install --require-hashes).\n"
        (staging / "requirements.txt").write_text(header + hashed_requirements(lines))
        (staging / "Dockerfile").write_text(dockerfile(base_image))
        (staging / ".dockerignore").write_text("**/__pycache__\n")
        os.chmod(staging, 0o755)
        if output.exists():
            old = output.with_name(f".{output.name}.old-{os.getpid()}")
            output.rename(old)
            staging.rename(output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_service.scoring.package", description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="build context folder to write")
    parser.add_argument(
        "--models-from",
        type=Path,
        help="package the models fetched from an Azure ML registry into this folder (azureml_promote fetch)",
    )
    parser.add_argument(
        "--use-case", help="package only these use cases' production models (NAME[,NAME], use cases or groups)"
    )
    parser.add_argument("--base-image", default=BASE_IMAGE, help="base image, pinned by digest (NAME@sha256:...)")
    args = parser.parse_args(argv)
    from ml_service.config import ConfigError, project_root, select_use_cases
    from ml_service.util.env_variables import SettingsError, load_settings

    try:
        settings = load_settings()
        root = project_root(settings.project_root)
        use_cases = select_use_cases(args.use_case, root) if args.use_case is not None else None
        manifest = build(
            settings, args.output, root, models_from=args.models_from, use_cases=use_cases, base_image=args.base_image
        )
    except (SettingsError, ConfigError, ValueError) as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    shown = ", ".join(f"{m['name']} v{m['version']}" for m in manifest["models"])
    print(f"package: {args.output} ({len(manifest['models'])} models: {shown})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
