"""What every step command shares: its argument parser, the use case it works on, and clean failure."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ml_service.pipelines.many_models import TooManyFailures
from ml_service.registry.errors import RegistryError
from ml_service.util.data_checks import DataValidationError
from ml_service.util.env_variables import SettingsError

# Errors a user can cause and fix: reported as one line, exit code 2. Anything else is a bug: full traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    DataValidationError,
    RegistryError,
    SettingsError,
    FileNotFoundError,
    TooManyFailures,
    ValueError,
)


@dataclass(frozen=True)
class UseCase:
    """A single-model use case's entry points, found by the convention of the diabetes_regression sample."""

    name: str
    parameters: ModuleType
    train: ModuleType
    evaluate: ModuleType
    register: ModuleType

    def load_parameters(self) -> Any:
        return self.parameters.load_parameters()


def load_use_case(name: str) -> UseCase:
    if not name.isidentifier():
        raise ValueError(f"use case {name!r} is not a Python package name")
    try:
        return UseCase(
            name,
            importlib.import_module(f"{name}.parameters"),
            importlib.import_module(f"{name}.training.train"),
            importlib.import_module(f"{name}.evaluate.evaluate_model"),
            importlib.import_module(f"{name}.register.register_model"),
        )
    except ModuleNotFoundError as exc:
        raise ValueError(f"use case {name!r}: cannot import {exc.name}") from None


def step_parser(
    description: str, inputs: Iterable[str], outputs: Iterable[str] = ("output",)
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--use-case", required=True, help="use-case package, e.g. diabetes_regression")
    for name in inputs:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=f"input: {name}")
    for name in outputs:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True, help=f"output folder: {name}")
    return parser


def run_step(step_name: str, body: Callable[[], None]) -> int:
    """Run a step body; a user-fixable error becomes one line on stderr and exit code 2."""
    try:
        body()
    except EXPECTED_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {step_name}: {message}", file=sys.stderr)
        return 2
    return 0
