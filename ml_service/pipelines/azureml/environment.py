"""What an Azure ML job runs in: the code snapshot (the repository minus local state) and the environment.

The environment is the Azure ML base image plus a conda file holding the *runtime* part of `requirements.lock`
(the packages reachable from `[project.dependencies]`, not the dev tools), pinned exactly as locally.

Parallel steps run in a second environment: Azure ML's parallel-job driver imports packages the project does
not need (azureml-core, azureml-dataset-runtime, pkg_resources), and those pin some shared packages lower
than requirements.lock does (numpy, cloudpickle, azure-identity). `PARALLEL_LOCK` is the project's runtime
dependencies plus `PARALLEL_DRIVER` resolved together for the job's platform by `make lock`.

The code snapshot: Azure ML uploads the `code` folder of a job. Instead of a top-level `.amlignore`, the
repository is copied into a staging folder without `CODE_IGNORE`, and that folder is the job's `code`, so
secrets (`.env`), the virtualenv and local runs never leave the machine.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04"
PYTHON_VERSION = "3.11"

# Never uploaded: secrets, local state, caches, VCS data, tooling. Matched against every path component.
CODE_IGNORE: tuple[str, ...] = (
    ".env",
    ".venv",
    "venv",
    "local",
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".coverage",
    "coverage.xml",
    "htmlcov",
    "mlruns",
    "mlartifacts",
    "*.egg-info",
    "data/generated",
)

# The target of every job: Linux x86_64, CPython 3.11 (the base image plus the conda python).
TARGET_MARKERS = {
    "python_version": "3.11",
    "python_full_version": "3.11.9",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}

PARALLEL_DRIVER = "environment_setup/parallel-driver.in"
PARALLEL_LOCK = "environment_setup/parallel-requirements.lock"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)\s*(?:;\s*(.+))?$")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)")
_PROJECT = "__project__"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    return normalize(re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0])


def runtime_requirements(lock_file: Path, pyproject: Path) -> list[str]:
    """`name==version` lines of the lock reachable from the project's runtime dependencies, for the target."""
    from packaging.markers import Marker

    roots = {
        _requirement_name(r) for r in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    }
    pins: list[tuple[str, str]] = []  # (normalized name, requirement line)
    parents: dict[str, set[str]] = {}
    current: str | None = None
    for line in lock_file.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            name, _extras, version, marker = match.groups()
            current = None
            if marker and not Marker(marker).evaluate(TARGET_MARKERS):
                continue
            current = normalize(name)
            pins.append((current, f"{name}=={version}"))
            parents.setdefault(current, set())
            continue
        via = _VIA.match(line)
        if via and current is not None:
            parent = via.group(1)
            parents[current].add(_PROJECT if parent.endswith("-template") or "pyproject" in line else normalize(parent))
    needed = set(roots)
    changed = True
    while changed:
        changed = False
        for name, from_ in parents.items():
            if name not in needed and from_ & needed:
                needed.add(name)
                changed = True
    missing = roots - {name for name, _ in pins}
    if missing:
        raise ValueError(f"{lock_file}: no pinned version for runtime dependencies {sorted(missing)}")
    return [line for name, line in pins if name in needed]


def conda_spec(requirements: list[str], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "channels": ["conda-forge"],
        "dependencies": [f"python={PYTHON_VERSION}", "pip", {"pip": list(requirements)}],
    }


def environment_version(conda: dict[str, Any]) -> str:
    """Content hash: the same lock gives the same environment version, so Azure ML reuses the built image."""
    text = repr((BASE_IMAGE, conda))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_environment(project_root: Path, name: str):
    """The Azure ML `Environment` every step of every job runs in."""
    from azure.ai.ml.entities import Environment

    requirements = runtime_requirements(project_root / "requirements.lock", project_root / "pyproject.toml")
    conda = conda_spec(requirements, name)
    return Environment(
        name=name,
        version=environment_version(conda),
        description="Runtime requirements from requirements.lock on the Azure ML OpenMPI Ubuntu 22.04 image",
        image=BASE_IMAGE,
        conda_file=conda,
    )


def locked_requirements(lock_file: Path) -> list[str]:
    """Every `name==version` line of a lock compiled for the job's platform (no markers to evaluate)."""
    lines = [m.group(0).strip() for m in map(_PIN.match, lock_file.read_text(encoding="utf-8").splitlines()) if m]
    if not lines:
        raise ValueError(f"{lock_file}: no pinned requirement; run `make lock`")
    return lines


def build_parallel_environment(project_root: Path, name: str):
    """The Azure ML `Environment` of parallel steps: the parallel lock (project + driver packages)."""
    from azure.ai.ml.entities import Environment

    conda = conda_spec(locked_requirements(project_root / PARALLEL_LOCK), f"{name}-parallel")
    return Environment(
        name=f"{name}-parallel",
        version=environment_version(conda),
        description=f"{PARALLEL_LOCK}: runtime requirements plus what Azure ML's parallel driver imports",
        image=BASE_IMAGE,
        conda_file=conda,
    )


def ignored(relative: Path, patterns: tuple[str, ...] = CODE_IGNORE) -> bool:
    """Whether a path (relative to the repository root) is left out of the code snapshot."""
    posix = relative.as_posix()
    for pattern in patterns:
        if "/" in pattern:
            if posix == pattern or posix.startswith(pattern + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in relative.parts):
            return True
    return False


def stage_code(project_root: Path, destination: Path, patterns: tuple[str, ...] = CODE_IGNORE) -> Path:
    """Copy the repository into `destination` without the ignored paths; returns `destination`."""
    root = project_root.resolve()
    destination = destination.resolve()
    if destination == root or root in destination.parents and not ignored(destination.relative_to(root), patterns):
        raise ValueError(f"code staging folder {destination} must be outside the repository or in an ignored folder")
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for folder, dirnames, filenames in os.walk(root):
        here = Path(folder).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not ignored(here / d, patterns))
        for filename in sorted(filenames):
            relative = here / filename
            if ignored(relative, patterns):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, target)
    return destination
