"""What every step command shares: its argument parser, the project it works in, and clean failure."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ml_service.config import ConfigError, project_root
from ml_service.data_checks import DataValidationError
from ml_service.pipelines.training import TooManyFailures
from ml_service.registry.errors import RegistryError
from ml_service.registry.model_set import ModelSetError
from ml_service.util.env_variables import SettingsError

# Errors a user can cause and fix: reported as one line, exit code 2. Anything else is a bug: full traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataValidationError,
    ModelSetError,
    RegistryError,
    SettingsError,
    FileNotFoundError,
    TooManyFailures,
    ValueError,
)


def step_parser(
    description: str, inputs: Iterable[str] = (), outputs: Iterable[str] = ("output",)
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description.strip().splitlines()[0])
    for name in inputs:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=f"input folder: {name}")
    for name in outputs:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=f"output folder: {name}")
    return parser


def root() -> Path:
    """The project folder (holding pyproject.toml with the use-case declaration): PROJECT_ROOT, else the
    current folder or a parent of it."""
    return project_root(Path(os.environ["PROJECT_ROOT"]) if os.environ.get("PROJECT_ROOT") else None)


def run_step(step_name: str, body: Callable[[], None]) -> int:
    """Run a step body; a user-fixable error becomes one line on stderr and exit code 2."""
    try:
        body()
    except EXPECTED_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {step_name}: {message}", file=sys.stderr)
        return 2
    return 0
