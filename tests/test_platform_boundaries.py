"""The platform names no use case, and use cases import nothing of the platform, MLflow or Azure.

Why a test: both rules are what makes a use case a plug-in (add, replace or delete one without touching
`ml_service/`), and both are easy to break with one convenient import.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ml_service.config import declared_use_cases, load_config

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_USE_CASES = ("ml_service", "mlflow", "azure", "azureml")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _use_case_packages() -> set[str]:
    return {load_config(name, ROOT).code.split(":")[0].split(".")[0] for name in declared_use_cases(ROOT)}


def _code_strings(path: Path) -> list[str]:
    """String constants of a module's code, its docstrings left out (an example in prose names no use case)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_platform_module_imports_or_names_a_declared_use_case():
    packages = _use_case_packages()
    names = set(declared_use_cases(ROOT)) | {load_config(n, ROOT).model_name for n in declared_use_cases(ROOT)}
    words = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, packages | names))) + r")(?![\w])")
    offenders = []
    for path in sorted((ROOT / "ml_service").rglob("*.py")):
        imported = _imports(path) & packages
        if imported:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(imported)}")
        named = {m.group(1) for text in _code_strings(path) for m in words.finditer(text)}
        if named:
            offenders.append(f"{path.relative_to(ROOT)} names {sorted(named)}")
    assert not offenders, offenders


def test_use_case_code_imports_nothing_of_the_platform_mlflow_or_azure():
    offenders = []
    for package in sorted(_use_case_packages()):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "tests" in path.relative_to(ROOT).parts:
                continue  # a use case's tests may drive the platform
            bad = {name for name in _imports(path) if name in FORBIDDEN_IN_USE_CASES}
            if bad:
                offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, offenders
