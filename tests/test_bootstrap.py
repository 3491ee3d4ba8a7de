"""bootstrap/bootstrap.py: the declaration edit, the plan against this template, refusals, and new projects made
from each starter with each CI choice that test, train, register and name no sample in the platform."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as ROOT
from tests.conftest import seed_store

SCRIPT = ROOT / "bootstrap" / "bootstrap.py"
sys.path.insert(0, str(SCRIPT.parent))

import bootstrap as bs  # noqa: E402

SAMPLE_WORDS = re.compile(r"diabetes|nyc_energy|(?<![A-Za-z0-9])ff(?![A-Za-z0-9])", re.IGNORECASE)
DECLARATION = """[project]
name = "t"

# Which use cases exist.
[tool.mlops.use-cases]
a = "a/config.json"
b = "sample/b.json"  # the sample
c = "sample/c.json"

# Groups.
[tool.mlops.groups]
g = [
    "b",
    "c",
]
h = ["a"]

[tool.ruff]
line-length = 120
"""


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- the declaration


def test_edit_declaration_removes_the_samples_lines_and_adds_the_new_one() -> None:
    text = bs.edit_declaration(DECLARATION, ["b", "c"], ["g"], {"churn": "churn/config.json"})
    data = tomllib.loads(text)
    assert data["tool"]["mlops"] == {
        "use-cases": {"a": "a/config.json", "churn": "churn/config.json"},
        "groups": {"h": ["a"]},
    }
    assert data["tool"]["ruff"] == {"line-length": 120} and data["project"] == {"name": "t"}
    # a line edit: comments and the order of the rest stay, the new line ends the table
    assert (
        '# Which use cases exist.\n[tool.mlops.use-cases]\na = "a/config.json"\nchurn = "churn/config.json"\n' in text
    )
    assert '# Groups.\n[tool.mlops.groups]\nh = ["a"]\n' in text


def test_edit_declaration_refuses_a_layout_it_cannot_edit_line_by_line() -> None:
    inline = '[tool.mlops]\nuse-cases = { a = "a.json", b = "b.json" }\n'
    with pytest.raises(bs.BootstrapError, match="edit it by hand"):
        bs.edit_declaration(inline, ["b"], [], {"churn": "churn/config.json"})


# ---------------------------------------------------------------- what is copied, what is removed


@pytest.mark.parametrize("ci", bs.CI_CHOICES)
def test_plan_against_this_template(ci: str) -> None:
    files = bs.template_files(ROOT)
    plan = bs.plan_project(ROOT, files, list(bs.SAMPLES), ci, "churn")
    assert sorted(plan.copied + list(plan.deleted)) == sorted(files)
    for rel in plan.copied:
        assert not rel.startswith(("diabetes_regression/", "ff/", "bootstrap/", ".git/", ".venv/", "local/")), rel
    sample_only = (".pipelines/ff-*", ".github/workflows/ff-*", "*diabetes_regression-ci.yml", "tests/test_ff_*")
    sample_only += ("tests/test_diabetes*", "data/diabetes*", "bench/bench_many_models.py")
    assert not [rel for rel in plan.copied if bs.matches(rel, sample_only)]
    declared, groups = bs.read_declarations(ROOT)
    assert set(plan.removed_use_cases) == set(declared)  # every declared use case of the template is a sample
    assert set(plan.removed_groups) == set(groups)
    assert "pyproject.toml" in plan.copied and "Makefile" in plan.copied and "ml_service/config.py" in plan.copied
    ado = [p for p in files if p.startswith(".pipelines/")]
    github = [p for p in files if p.startswith(".github/")]
    kept_ado = [p for p in plan.copied if p.startswith(".pipelines/")]
    kept_github = [p for p in plan.copied if p.startswith(".github/")]
    assert bool(kept_ado) == (ci != "github" and bool(ado))
    assert bool(kept_github) == (ci != "azure-devops" and bool(github))
    assert ("tests/test_pipelines_yaml.py" in plan.copied) == (ci != "github")
    assert ("tests/test_iac_azure_devops.py" in plan.copied) == (ci != "github")
    assert ("tests/test_github_workflows.py" in plan.copied) == (ci != "azure-devops")
    assert ("tests/test_ci_parity.py" in plan.copied) == (ci == "both")
    # what the kept CI tests read is kept with them
    assert ("environment_setup/keyvault_create_mode.sh" in plan.copied) == (ci != "github")
    expected_copies = {
        p: p.replace("diabetes_regression", "churn")
        for p in (kept_ado + kept_github + list(plan.deleted))
        if p.endswith("diabetes_regression-ci.yml") and plan.deleted.get(p, "").startswith("the diabetes")
    }
    assert plan.ci_copies == expected_copies and all(c.endswith("churn-ci.yml") for c in plan.ci_copies.values())


def test_keep_samples_with_drop_ff_keeps_diabetes_and_its_data() -> None:
    files = bs.template_files(ROOT)
    ff = [s for s in bs.SAMPLES if s.folder == "ff"]
    plan = bs.plan_project(ROOT, files, ff, "both", "churn")
    assert "diabetes_regression/use_case.py" in plan.copied and "data/diabetes.csv" in plan.copied
    assert not [p for p in plan.copied if p.startswith("ff/")]
    assert "diabetes_regression" not in plan.removed_use_cases and plan.removed_groups == ["ff"]


# ---------------------------------------------------------------- refusals: one line, exit 2, nothing written


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--name", "Churn"], "contains 'C'"),
        (["--name", "1churn"], "starts with a digit"),
        (["--name", "class"], "Python keyword"),
        (["--name", "ff"], "top-level file or folder 'ff'"),
        (["--name", "ml_service"], "top-level file or folder"),
        (["--name", "json"], "standard-library"),
        (["--name", "pandas"], "installed package"),
        (["--name", "churn", "--in-place"], "--in-place is gone"),
        (["--name", "churn", "--partition-column", "store"], "needs --many-models"),
        (["--name", "churn", "--many-models", "--partition-column", "1x"], "invalid --partition-column"),
        (["--name", "churn", "--many-models", "--partition-column", "price"], "already has a column"),
        (["--name", "churn", "--keep-samples", "--drop-sample-data"], "need their data"),
    ],
)
def test_refusals(tmp_path: Path, args: list[str], words: str) -> None:
    target = tmp_path / "proj"
    result = run_cli(*args, "--output", str(target))
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    assert not target.exists() and list(tmp_path.iterdir()) == []  # not even the staging folder


def test_refuses_a_non_empty_target_and_one_inside_the_template(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mine.txt").write_text("keep me")
    result = run_cli("--name", "churn", "--output", str(tmp_path / "proj"))
    assert result.returncode == 2 and "not an empty folder" in result.stderr
    assert [p.name for p in (tmp_path / "proj").iterdir()] == ["mine.txt"]
    result = run_cli("--name", "churn", "--output", str(ROOT / "local" / "proj"))
    assert result.returncode == 2 and "inside the template" in result.stderr


def test_no_output_names_the_option() -> None:
    result = run_cli("--name", "churn")
    assert result.returncode == 2 and "--output DIR" in result.stderr


# ---------------------------------------------------------------- new projects, end to end


def project_env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTEST_", "COV_"))}
    env["LOCAL_DIR"] = str(target / "local")
    env.pop("PYTHONPATH", None)
    return env


def run_in(target: Path, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=target, env=project_env(target), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, " ".join(cmd) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize(
    ("starter", "ci"),
    [("single_model", "both"), ("many_models", "azure-devops"), ("single_model", "github")],
)
def test_new_project_tests_trains_and_names_no_sample(
    tmp_path: Path, empty_mlflow_db: Path, starter: str, ci: str
) -> None:
    target = tmp_path / "proj"
    name = "sales" if starter == "many_models" else "churn"
    extra = ["--many-models", "--partition-column", "shop"] if starter == "many_models" else []
    result = run_cli("--name", name, "--output", str(target), "--ci", ci, *extra)
    assert result.returncode == 0, result.stderr
    assert "removed diabetes_regression/" in result.stdout and "removed ff/" in result.stdout

    # the samples are gone with their declaration; the use case is the only one declared
    for gone in ("diabetes_regression", "ff", "bootstrap", "data/diabetes.csv", "bench/bench_many_models.py"):
        assert not (target / gone).exists(), gone
    mlops = tomllib.loads((target / "pyproject.toml").read_text())["tool"]["mlops"]
    assert mlops["use-cases"] == {name: f"{name}/config.json"} and mlops.get("groups", {}) == {}
    assert (target / "README.md").read_text().startswith(f"# {name}\n")
    config = json.loads((target / name / "config.json").read_text())
    assert config["code"] == f"{name}.use_case:{name.capitalize()}" and config["data"]["path"] == f"data/{name}.csv"
    if starter == "many_models":
        assert config["partition_columns"] == ["shop"] and "shop" in config["columns"]
        assert (target / "data" / f"{name}.csv").read_text().startswith("shop,")

    # the CI chosen, and a pipeline of the use case's own where the template had the sample's
    assert (target / ".pipelines").exists() == (ci != "github")
    assert not (target / ".github").exists() or ci != "azure-devops"
    assert not list(target.glob("environment_setup/iac-*.yml")) or ci != "github"
    assert (target / "environment_setup" / "environments.yml").is_file()  # both CI systems read it
    for folder in (".pipelines", ".github/workflows"):
        if (target / folder).is_dir():
            assert (target / folder / f"{name}-ci.yml").is_file()
            assert not list((target / folder).glob("ff-*")) and not list((target / folder).glob("diabetes*"))
            text = (target / folder / f"{name}-ci.yml").read_text()
            assert name in text and "diabetes" not in text

    # in the new project, with the template's environment (no reinstall): the use case's tests pass, every test
    # module imports, and make's train step trains and registers the use case
    (target / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    python = str(target / ".venv" / "bin" / "python")
    run_in(target, python, "-m", "pytest", "-q", "-p", "no:cacheprovider", name)
    if ci == "both":
        run_in(target, python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only")
    seed_store(target / "local", empty_mlflow_db)
    run_in(target, "make", "train")
    registered = json.loads((target / "local/runs/all/current/register/output/registered.json").read_text())
    assert registered[name]["registered"] is True
    assert registered[name]["models"] == (4 if starter == "many_models" else 1)

    # the platform and the Makefile name no sample (what is left after the samples' folders went)
    for path in [target / "Makefile", *sorted((target / "ml_service").rglob("*.py"))]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not SAMPLE_WORDS.search(line), f"{path.relative_to(target)}:{number}: {line.strip()}"
