"""bootstrap/bootstrap.py: refusals, the pure functions, a bootstrap of a small template and of this one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT as ROOT

SCRIPT = ROOT / "bootstrap" / "bootstrap.py"
sys.path.insert(0, str(SCRIPT.parent))

import bootstrap as bs  # noqa: E402

# A miniature template with every kind of file the bootstrapper edits.
MINI = {
    "diabetes_regression/__init__.py": "",
    "diabetes_regression/train.py": ('"""Train the diabetes_regression model."""\n\nNAME = "diabetes_regression"\n'),
    "ff/__init__.py": "",
    "ff/pipeline_config.json": '{\n  "model_name": "diabetes_model"\n}\n',
    "ml_service/__init__.py": "",
    "ml_service/run.py": (
        "import argparse\n\nfrom diabetes_regression.train import NAME\n\n"
        'USE_CASES = {"diabetes_regression": "diabetes_regression/", "ff": "ff/pipeline_config.json"}\n'
        "DEFAULT = NAME\n"
    ),
    "tests/test_diabetes_regression_train.py": (
        'from diabetes_regression.train import NAME\n\n\ndef test_name():\n    assert NAME == "diabetes_regression"\n'
    ),
    "tests/test_ff_train.py": "import ff\n\n\ndef test_ff():\n    assert ff\n",
    "tests/test_use_cases.py": (
        "import json\nfrom pathlib import Path\n\nimport pytest\n\n\n"
        '@pytest.mark.parametrize("use_case", ["diabetes_regression", "ff"])\n'
        "def test_folder(use_case):\n    assert Path(use_case).is_dir()\n\n\n"
        "def test_ff_config():\n"
        '    assert json.loads(Path("ff/pipeline_config.json").read_text())\n'
    ),
    ".pipelines/diabetes_regression-ci.yml": (
        "trigger:\n  paths:\n    include:\n    - diabetes_regression/\n    - ff/\n"
        "steps:\n- script: |\n    make train-diabetes\n    make train-ff\n"
        "  displayName: Train\n"
        "- script: python -m ml_service.run --use-case ff\n  displayName: Train the ff models\n"
        "- script: python -m ml_service.run --use-case diabetes_regression\n"
        "  displayName: Train DiabetesRegression\n"
    ),
    ".pipelines/ff-ci.yml": "steps:\n- script: make train-ff\n",
    "Makefile": (
        ".PHONY: train train-diabetes train-ff bootstrap\n\n"
        "train: train-diabetes train-ff\n\n"
        "train-diabetes:\n\tpython -m ml_service.run --use-case diabetes_regression\n\n"
        "# the many-models sample\ntrain-ff:\n\tpython -m ml_service.run --use-case ff\n\n"
        "help:\n\t@echo make train-diabetes\n\t@echo make train-ff\n\n"
        "bootstrap:\n\tpython bootstrap/bootstrap.py --help\n"
    ),
    "README.md": (
        "# Template\n\nThe Diabetes Regression sample lives in `diabetes_regression/`.\n\n"
        "## The ff sample\n\nMany models, see `ff/`.\n\n## Next\n\n"
        "- run `make train-diabetes`\n- run `make train-ff`\n  (many models)\n\n"
        "| folder | what |\n| --- | --- |\n| diabetes-regression | one model |\n| ff/ | many |\n\n"
        "New project: `python bootstrap/bootstrap.py --directory DIR --name NAME`.\n"
    ),
    ".env.example": "# use case\nUSE_CASE=diabetes_regression\nDIABETES_REGRESSION_DATA=data/diabetes.csv\n",
    "data/diabetes.csv": "AGE,Y\n1,2\n",
    "data/create_diabetes_csv.py": "print('data')\n",
    "bootstrap/bootstrap.py": "# the tool\n",
    "bootstrap/README.md": "# bootstrap\n",
    "tests/test_bootstrap.py": "def test_it():\n    pass\n",
    "pyproject.toml": '[tool.ruff]\nline-length = 110\n\n[tool.ruff.lint]\nselect = ["E", "F", "I"]\n',
}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    root = tmp_path / "template"
    for rel, text in MINI.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".gitignore").write_text("local/\n__pycache__/\nignored.txt\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "template")
    (root / "untracked.md").write_text("diabetes_regression notes\n")
    (root / "ignored.txt").write_text("diabetes_regression\n")
    (root / "local").mkdir()
    (root / "local" / "x.txt").write_text("diabetes_regression\n")
    return root


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


def snapshot(path: Path) -> dict[str, bytes]:
    if not path.exists():
        return {}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def all_text(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "empty"),
        ("2fast", "starts with a digit"),
        ("My-Model", "contains"),
        ("café", "contains"),
        ("class", "keyword"),
        ("ml_service", "top-level folder"),
        ("ff", "top-level folder"),
        ("tests", "top-level folder"),
        ("diabetes_regression", "top-level folder"),
        ("json", "standard-library"),
        ("pandas", "installed package"),
    ],
)
def test_validate_name_rules(name: str, rule: str) -> None:
    message = bs.validate_name(name, installed={"pandas"})
    assert message is not None and rule in message and "\n" not in message


@pytest.mark.parametrize("name", ["churn", "churn_model", "m2", "_private"])
def test_validate_name_accepts(name: str) -> None:
    assert bs.validate_name(name) is None


def test_rewrite_text_all_spellings() -> None:
    text = " ".join(
        ["diabetes_regression", "DIABETES_REGRESSION", "diabetes-regression", "DiabetesRegression"]
        + ["Diabetes Regression"]
    )
    new, count = bs.rewrite_text(text, "churn_model")
    assert new == "churn_model CHURN_MODEL churn-model ChurnModel Churn Model"
    assert count == 5


def test_rewrite_text_keeps_prose_and_other_names() -> None:
    text = "a diabetes regression on diabetes_model; test_diabetes_regression_x"
    new, count = bs.rewrite_text(text, "churn")
    assert new == "a diabetes regression on diabetes_model; test_churn_x" and count == 1


def test_plan_renames() -> None:
    paths = ["diabetes_regression/train.py", ".pipelines/diabetes_regression-ci.yml", "ff/x.py", "Makefile"]
    assert bs.plan_renames(paths, "churn") == {
        "diabetes_regression/train.py": "churn/train.py",
        ".pipelines/diabetes_regression-ci.yml": ".pipelines/churn-ci.yml",
    }


def test_plan_renames_refuses_collisions() -> None:
    with pytest.raises(bs.BootstrapError):
        bs.plan_renames(["diabetes_regression.py", "churn.py"], "churn")


def test_is_ff_path() -> None:
    for p in ["ff/a.py", "tests/test_ff_train.py", ".pipelines/ff-ci.yml", "docs/ff.md", "data/ff/x.csv"]:
        assert bs.is_ff_path(p), p
    for p in ["diff/a.py", "tests/test_offline.py", "coeff.py", "docs/staff.md"]:
        assert not bs.is_ff_path(p), p


def test_drop_makefile() -> None:
    text, removed = bs.drop_makefile(MINI["Makefile"], bs.FF_REF)
    assert "train-ff" not in text and "many-models" not in text
    assert ".PHONY: train train-diabetes bootstrap\n" in text
    assert "train: train-diabetes\n" in text and "@echo make train-diabetes" in text
    assert any("rule train-ff" in r for r in removed)


def test_drop_yaml_items_script_lines_and_emptied_keys() -> None:
    text, _ = bs.drop_yaml(MINI[".pipelines/diabetes_regression-ci.yml"], bs.FF_REF)
    assert "ff" not in text
    assert "    make train-diabetes\n  displayName: Train\n" in text
    assert "- diabetes_regression/" in text and "--use-case diabetes_regression" in text
    only, _ = bs.drop_yaml("trigger:\n  paths:\n    include:\n    - ff/\nsteps:\n- script: x\n", bs.FF_REF)
    assert only == "steps:\n- script: x\n"


def test_drop_markdown() -> None:
    text, removed = bs.drop_markdown(MINI["README.md"], bs.FF_REF)
    assert "ff" not in text and "many models" not in text
    assert "## Next" in text and "make train-diabetes" in text and "| diabetes-regression |" in text
    assert any(r.startswith("section:") for r in removed)


def test_drop_python_in_tests_and_code() -> None:
    text, _ = bs.drop_python(MINI["tests/test_use_cases.py"], bs.FF_REF, is_test=True)
    assert "ff" not in text and "def test_folder" in text and '["diabetes_regression"]' in text
    code, _ = bs.drop_python(MINI["ml_service/run.py"], bs.FF_REF, is_test=False)
    assert 'USE_CASES = {"diabetes_regression": "diabetes_regression/"}' in code


def test_tests_that_use_a_dropped_helper_fixture_or_constant_go_too() -> None:
    source = (
        "import pytest\n\n"
        'CONFIG = "ff/pipeline_config.json"\n'
        "SPEC = {'config': CONFIG}\n\n\n"
        "def many_spec():\n    return build('ff_train')\n\n\n"
        "@pytest.fixture\ndef many(tmp_path):\n    return many_spec()\n\n\n"
        "def test_uses_helper():\n    assert many_spec()\n\n\n"
        "def test_uses_fixture(many):\n    assert many\n\n\n"
        "def test_uses_constant():\n    assert SPEC\n\n\n"
        "def test_kept(tmp_path):\n    assert build('train')\n"
    )
    text, removed = bs.drop_python(source, bs.FF_REF, is_test=True)
    assert "def test_kept(tmp_path)" in text
    for gone in ("CONFIG", "SPEC", "many_spec", "def many(", "test_uses_helper", "test_uses_fixture"):
        assert gone not in text, (gone, text)
    assert "test_uses_constant" not in text
    compile(text, "test_x.py", "exec")
    assert len(removed) == 7


def test_drop_references_inline_tokens_and_enumerations() -> None:
    yml = "- script: >-\n    pytest --cov=ml_service --cov=churn --cov=ff\n    --cov-report=term\n"
    text, removed = bs.drop_references("x.yml", yml, bs.FF_REF)
    assert text == "- script: >-\n    pytest --cov=ml_service --cov=churn\n    --cov-report=term\n"
    md = "Layering: use-case folders (`churn/`, `ff/`) import nothing.\nSecond line.\n"
    text, _ = bs.drop_references("x.md", md, bs.FF_REF)
    assert text == "Layering: use-case folders (`churn/`) import nothing.\nSecond line.\n"


def test_drop_json() -> None:
    text, removed = bs.drop_json('{\n  "cases": ["a", "ff"],\n  "ff": 1\n}\n', bs.FF_REF)
    assert text == '{\n  "cases": [\n    "a"\n  ]\n}\n' and len(removed) == 2


# ---------------------------------------------------------------- refusals


def refusal(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "empty"),
        ("9lives", "starts with a digit"),
        ("Churn-Model", "contains"),
        ("import", "keyword"),
        ("ml_service", "top-level folder"),
        ("data", "top-level folder"),
        ("bootstrap", "top-level folder"),
        ("os", "standard-library"),
    ],
)
def test_refuses_bad_names(tmp_path: Path, mini: Path, name: str, words: str) -> None:
    target = tmp_path / "new"
    before = snapshot(mini)
    refusal(run_cli("--template", str(mini), "--directory", str(target), "--name", name), words)
    assert not target.exists() and snapshot(mini) == before
    assert [p.name for p in tmp_path.iterdir()] == ["template"]  # no staging folder left


def test_refuses_non_empty_target(tmp_path: Path, mini: Path) -> None:
    target = tmp_path / "new"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    refusal(run_cli("--template", str(mini), "--directory", str(target), "--name", "churn"), "not empty")
    assert snapshot(target) == {"keep.txt": b"mine"}


def test_refuses_target_inside_template(mini: Path) -> None:
    before = snapshot(mini)
    target = mini / "sub" / "new"
    result = run_cli("--template", str(mini), "--directory", str(target), "--name", "churn")
    refusal(result, "inside the template")
    assert snapshot(mini) == before and not (mini / "sub").exists()


def test_refuses_in_place_with_uncommitted_changes(mini: Path) -> None:
    (mini / "Makefile").write_text("changed\n")
    before = snapshot(mini)
    refusal(run_cli("--template", str(mini), "--in-place", "--name", "churn"), "uncommitted")
    assert snapshot(mini) == before


def test_refusals_against_this_template(tmp_path: Path) -> None:
    refusal(run_cli("--directory", str(tmp_path / "x"), "--name", "sys"), "standard-library")
    refusal(run_cli("--directory", str(ROOT / "x"), "--name", "churn"), "inside the template")
    assert not (ROOT / "x").exists() and not (tmp_path / "x").exists()


def test_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "--drop-ff" in result.stdout and "--in-place" in result.stdout


# ---------------------------------------------------------------- bootstraps


def test_bootstrap_keeps_ff(tmp_path: Path, mini: Path) -> None:
    target = tmp_path / "new"
    result = run_cli("--template", str(mini), "--directory", str(target), "--name", "churn")
    assert result.returncode == 0, result.stderr
    files = all_text(target)
    assert "churn/train.py" in files and ".pipelines/churn-ci.yml" in files
    assert "tests/test_churn_train.py" in files and "untracked.md" in files
    assert "ignored.txt" not in files and not (target / "local").exists() and not (target / ".git").exists()
    assert not any(p.startswith("bootstrap/") or "test_bootstrap" in p for p in files)
    for rel, text in files.items():
        assert not re.search("diabetes.regression", rel + text, re.IGNORECASE), rel
    assert "ff/pipeline_config.json" in files and "diabetes_model" in files["ff/pipeline_config.json"]
    assert "CHURN_DATA=" in files[".env.example"] and "Train Churn" in files[".pipelines/churn-ci.yml"]
    assert "bootstrap" not in files["Makefile"] and "bootstrap" not in files["README.md"]
    assert "renamed" in result.stdout and "Makefile (" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["new", "template"]


def test_bootstrap_drop_ff_and_data(tmp_path: Path, mini: Path) -> None:
    target = tmp_path / "new"
    args = ["--template", str(mini), "--directory", str(target), "--name", "churn", "--drop-ff"]
    result = run_cli(*args, "--drop-sample-data")
    assert result.returncode == 0, result.stderr
    files = all_text(target)
    assert not any(bs.is_ff_path(p) for p in files)
    for rel, text in files.items():
        assert not re.search(r"(?<![\w.-])ff/", text), rel
        assert not bs.FF_REF.search(text), (rel, text)
    assert sorted(p for p in files if p.startswith("data/")) == ["data/README.md", "data/create_diabetes_csv.py"]
    assert "train-diabetes" in files["Makefile"] and "def test_folder" in files["tests/test_use_cases.py"]
    assert "import json" not in files["tests/test_use_cases.py"]  # left unused, removed by ruff
    assert "refers to removed sample data data/diabetes.csv" in result.stdout  # .env.example
    subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=target, check=True, capture_output=True)


def test_bootstrap_in_place(mini: Path) -> None:
    result = run_cli("--template", str(mini), "--in-place", "--name", "churn", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (mini / "churn" / "train.py").exists() and not (mini / "diabetes_regression").exists()
    assert (mini / ".git").is_dir() and (mini / "local" / "x.txt").exists()
    assert (mini / "ignored.txt").exists()
    assert not (mini / "bootstrap").exists()
    assert [p.name for p in mini.parent.iterdir()] == ["template"]


def test_bootstrap_this_template(tmp_path: Path) -> None:
    target = tmp_path / "proj"
    result = run_cli("--directory", str(target), "--name", "churn_model", "--quiet")
    assert result.returncode == 0, result.stderr
    for path in target.rglob("*"):
        rel = path.relative_to(target).as_posix()
        assert "diabetes_regression" not in rel
        if path.is_file():
            assert "diabetes_regression" not in path.read_text(errors="replace"), rel


def test_bootstrap_this_template_drop_ff(tmp_path: Path) -> None:
    target = tmp_path / "proj"
    result = run_cli("--directory", str(target), "--name", "churn_model", "--drop-ff", "--quiet")
    assert result.returncode == 0, result.stderr
    assert not (target / "ff").exists()
    for path in target.rglob("*"):
        if path.is_file():
            assert not re.search(r"(?<![\w.-])ff/", path.read_text(errors="replace")), path


@pytest.mark.slow
@pytest.mark.skipif(
    not (ROOT / "ml_service/pipelines/run_train_pipeline.py").exists(),
    reason="needs the foundation's local runner (ml_service/pipelines/run_train_pipeline.py)",
)
def test_bootstrapped_project_tests_and_trains(tmp_path: Path) -> None:
    target = tmp_path / "proj"
    result = run_cli("--directory", str(target), "--name", "churn_model", "--quiet")
    assert result.returncode == 0, result.stderr
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # What the rename touches: lint, the renamed use case's tests, the foundation around it and the pipeline
    # YAML (renamed files and references), then the local training flow. The rest of the suite does not
    # depend on the name and runs in the template's own `make test`.
    renamed_tests = [
        "tests/test_churn_model.py",
        "tests/test_settings.py",
        "tests/test_data_checks.py",
        "tests/test_train_pipeline.py",
        "tests/test_pipelines_yaml.py",
    ]
    for path in renamed_tests:
        assert (target / path).is_file(), path
    for cmd in (
        ["-m", "ruff", "check", "."],
        ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", *renamed_tests],
        ["-m", "ml_service.pipelines.run_train_pipeline", "--use-case", "churn_model"],
    ):
        done = subprocess.run([sys.executable, *cmd], cwd=target, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_project_without_ff_and_sample_data_lints_imports_and_trains(tmp_path: Path) -> None:
    """--drop-ff --drop-sample-data leaves a working project: lint clean, every remaining test module imports, the
    Azure job tests (which had ff parts) pass, and, once make regenerates the sample file, the local flow trains."""
    target = tmp_path / "proj"
    args = ["--directory", str(target), "--name", "churn_model", "--drop-ff", "--drop-sample-data", "--quiet"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert not (target / "ff").exists() and not (target / "ml_service/pipelines/steps/ff_train.py").exists()
    assert not (target / "data/diabetes.csv").exists() and (target / "data/create_diabetes_csv.py").is_file()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for cmd in (
        ["data/create_diabetes_csv.py", "--output", "data/diabetes.csv"],  # what make does when the file is missing
        ["-m", "ruff", "check", "."],
        ["-m", "ruff", "format", "--check", "."],
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only", "tests"],
        ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow", "tests/test_azureml_jobs.py"],
        ["-m", "ml_service.pipelines.run_train_pipeline", "--use-case", "churn_model", "--in-process"],
    ):
        done = subprocess.run([sys.executable, *cmd], cwd=target, env=env, capture_output=True, text=True)
        assert done.returncode == 0, " ".join(cmd) + "\n" + done.stdout[-3000:] + done.stderr[-3000:]
