"""Make a new project from this template: copy it, remove the samples, add the team's use case from a starter.

    python bootstrap/bootstrap.py --name churn --output ../churn
    python bootstrap/bootstrap.py --name sales --output ../sales --many-models --partition-column store
    python bootstrap/bootstrap.py --name churn --output ../churn --ci github     # or azure-devops, both (default)

Bootstrapping is copying files, deleting whole files and folders, and two line edits of `pyproject.toml` (the
use-case declaration): the samples are plug-ins, so nothing in the platform (`ml_service/`, the Makefile, the
shared CI templates) is edited. Nothing is written half-way: the project is built in a temporary folder next to
the target and renamed into place at the end. See bootstrap/README.md for every file removed and why.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import keyword
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE_ROOT = Path(__file__).resolve().parent.parent
STARTERS = Path(__file__).resolve().parent / "starters"
# The starters' placeholder names, replaced by the team's name (snake case, and CamelCase for the class).
PLACEHOLDER = "your_use_case"
PLACEHOLDER_CLASS = "YourUseCase"
STARTER_PARTITION_COLUMN = "store"
DECLARATION_FILE = "pyproject.toml"
USE_CASES_TABLE = "tool.mlops.use-cases"
GROUPS_TABLE = "tool.mlops.groups"
TEXT_SUFFIXES = {".py", ".json", ".csv", ".md", ".txt", ".yml", ".yaml", ".toml"}

# Never copied: version control, the environment, run outputs, caches; and the bootstrapper itself (the result
# is a project, not a template).
NEVER_COPIED_PARTS = {".git", ".venv", "local", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}
NEVER_COPIED_FILES = ("bootstrap/*", "tests/test_bootstrap*.py", "*.pyc")


@dataclass(frozen=True)
class Sample:
    """A sample use-case folder and the files elsewhere that exist only for it (globs, relative to the root).

    Its declarations (the use cases whose configuration lies in `folder`, and the groups naming them) and its
    data (the files its configurations name, unless a kept use case names them too) are found, not listed."""

    folder: str
    files: tuple[str, ...]
    # The sample's own CI pipeline, which trains and deploys one use case by name: the new project gets a copy
    # for its use case (the file renamed, the sample's name in it replaced by the new one).
    ci_pipelines: tuple[str, ...] = ()


SAMPLES = (
    Sample(
        "diabetes_regression",
        files=(
            "tests/test_diabetes_regression*.py",  # its tests, until they live in its folder (issue 10, item 9)
            "bench/bench_scoring.py",  # compares the service with the sample's Azure ML score.py
        ),
        ci_pipelines=(".pipelines/diabetes_regression-ci.yml", ".github/workflows/diabetes_regression-ci.yml"),
    ),
    Sample(
        "ff",
        files=(
            "tests/test_ff_*.py",  # its tests, until they live in its folder (issue 10, item 9)
            ".pipelines/ff-*.yml",  # prepare-data, build-train, deploy-aci, deploy-webapp of the ff group
            ".github/workflows/ff-*.yml",
            "bench/bench_many_models.py",  # measures training on ff's generated data
        ),
    ),
)

# What each CI system owns: kept with --ci of that system (or both), deleted otherwise. A file listed under both
# systems (the tests of their parity) is kept only with --ci both.
PARITY_TESTS = "tests/test_ci_parity.py"
CI_FILES = {
    "azure-devops": (
        ".pipelines/*",
        # the Azure DevOps pipelines of the infrastructure and their step template and script (the IaC, and
        # environments.yml both systems read, stay)
        "environment_setup/docker-image-pipeline.yml",
        "environment_setup/iac-*.yml",
        "environment_setup/terraform-install-steps.yml",
        "environment_setup/keyvault_create_mode.sh",
        "tests/test_pipelines_yaml.py",
        "tests/test_iac_azure_devops.py",
        PARITY_TESTS,
    ),
    "github": (".github/*", "tests/test_github_workflows.py", PARITY_TESTS),
}
CI_CHOICES = ("azure-devops", "github", "both")

# Options of the previous (rename-the-sample) bootstrap that no longer mean anything: the one-line replacement.
GONE_OPTIONS = {
    "--in-place": "--in-place is gone: bootstrap makes a new folder (--output DIR); the template is left as it is",
}


class BootstrapError(Exception):
    """A refusal: the message is the one line printed on stderr."""


# ---------------------------------------------------------------- names


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part) or name


def validate_name(name: str, reserved: Iterable[str] = (), installed: Iterable[str] = ()) -> str | None:
    """None if `name` can be the new use case's package and model name, else the rule it breaks (one line)."""
    if not name:
        return "invalid name: it is empty"
    if name[0].isdigit():
        return f"invalid name {name!r}: it starts with a digit"
    bad = sorted({c for c in name if not (c.islower() and c.isascii() or c.isdigit() or c == "_")})
    if bad:
        return (
            f"invalid name {name!r}: it contains {''.join(bad)!r}; use only lowercase letters, digits and underscores"
        )
    if keyword.iskeyword(name):
        return f"invalid name {name!r}: it is a Python keyword"
    if name in set(reserved):
        return f"invalid name {name!r}: it clashes with the top-level file or folder {name!r} of the template"
    if name in sys.stdlib_module_names:
        return f"invalid name {name!r}: it clashes with the Python standard-library module {name!r}"
    if name in set(installed):
        return f"invalid name {name!r}: it clashes with the installed package {name!r} (it would shadow it)"
    return None


def validate_column(column: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", column):
        return f"invalid --partition-column {column!r}: use letters, digits and underscores, not starting with a digit"
    return None


def installed_top_level_names() -> set[str]:
    """Import names of the packages installed where this runs (only meaningful from the project's venv)."""
    from importlib.metadata import packages_distributions

    return {n for n in packages_distributions() if n.isidentifier()}


# ---------------------------------------------------------------- which files


def matches(path: str, patterns: Iterable[str]) -> bool:
    """`path` matches a glob (`*` crosses folders) or lies in a folder pattern ``folder/``."""
    return any(fnmatch.fnmatchcase(path, p) or (p.endswith("/") and path.startswith(p)) for p in patterns)


def template_files(root: Path) -> list[str]:
    """The template's files, relative: what git knows (tracked, and untracked but not ignored) or, outside a git
    work tree, a walk; never `.git`, `.venv`, `local/`, caches, nor the bootstrapper."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        candidates = sorted({p for p in listed.split("\0") if p})
    except (OSError, subprocess.CalledProcessError):
        candidates = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    kept = []
    for rel in candidates:
        if NEVER_COPIED_PARTS & set(rel.split("/")) or matches(rel, NEVER_COPIED_FILES):
            continue
        path = root / rel
        if path.is_file() and not path.is_symlink():  # a file deleted in the work tree is still "cached"
            kept.append(rel)
    return kept


def read_declarations(root: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """{use case: config path} and {group: members} from the template's pyproject.toml."""
    data = tomllib.loads((root / DECLARATION_FILE).read_text())
    mlops = data.get("tool", {}).get("mlops", {})
    return dict(mlops.get("use-cases", {})), {k: list(v) for k, v in mlops.get("groups", {}).items()}


def config_data_files(root: Path, config_path: str) -> set[str]:
    """The project files a use-case configuration names: its data file and a shared columns file."""
    try:
        raw = json.loads((root / config_path).read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    named = set()
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        named.add(data["path"])
    if isinstance(raw.get("columns"), str):
        named.add(raw["columns"])
    return named


@dataclass
class Plan:
    """What the new project is: files copied, files deleted (with why), declarations removed and added."""

    copied: list[str] = field(default_factory=list)
    deleted: dict[str, str] = field(default_factory=dict)  # path -> reason
    ci_copies: dict[str, str] = field(default_factory=dict)  # sample pipeline -> the new use case's copy
    removed_use_cases: list[str] = field(default_factory=list)
    removed_groups: list[str] = field(default_factory=list)


def plan_project(root: Path, files: list[str], removed: list[Sample], ci: str, name: str) -> Plan:
    plan = Plan()
    use_cases, groups = read_declarations(root)
    gone_folders = [s.folder for s in removed]
    plan.removed_use_cases = [
        uc for uc, path in use_cases.items() if any(Path(path).parts[0] == folder for folder in gone_folders)
    ]
    plan.removed_groups = [g for g, members in groups.items() if set(members) & set(plan.removed_use_cases)]
    kept_data = set().union(
        *(config_data_files(root, p) for uc, p in use_cases.items() if uc not in plan.removed_use_cases)
    )
    sample_data = set().union(*(config_data_files(root, use_cases[uc]) for uc in plan.removed_use_cases))
    dropped_ci = [p for system, patterns in CI_FILES.items() if ci not in (system, "both") for p in patterns]
    for rel in files:
        reason = f"--ci {ci}" if matches(rel, dropped_ci) else None
        for sample in [] if reason else removed:
            if rel.startswith(sample.folder + "/"):
                reason = f"the {sample.folder} sample"
            elif matches(rel, sample.files):
                reason = f"needs the {sample.folder} sample"
            elif rel in sample.ci_pipelines:
                reason = f"the {sample.folder} sample's pipeline (the new use case has its copy)"
            elif rel in sample_data - kept_data:
                reason = f"data of the {sample.folder} sample"
            if reason:
                break
        if reason:
            plan.deleted[rel] = reason
        else:
            plan.copied.append(rel)
    # The new use case gets a pipeline of its own from the single-model sample's (one use case, by name: it
    # trains and deploys a many-models use case as well), wherever that CI system is kept.
    sources = [p for s in SAMPLES for p in s.ci_pipelines if p in files and not matches(p, dropped_ci)]
    for source in sources:
        sample = next(s.folder for s in SAMPLES if source in s.ci_pipelines)
        plan.ci_copies[source] = source.replace(sample, name)
    return plan


# ---------------------------------------------------------------- the declaration (pyproject.toml)


def _table_span(lines: list[str], table: str) -> tuple[int, int] | None:
    """Line indexes [header, end) of `[table]` (its end: the next table header or the end of the file)."""
    header = next((i for i, line in enumerate(lines) if line.strip() == f"[{table}]"), None)
    if header is None:
        return None
    end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    return header, end


def _entry_key(line: str) -> str | None:
    key, sep, _ = line.partition("=")
    key = key.strip().strip('"')
    return key if sep and key and not line.lstrip().startswith("#") else None


def _remove_entries(lines: list[str], table: str, names: set[str]) -> list[str]:
    span = _table_span(lines, table)
    if span is None or not names:
        return lines
    out = lines[: span[0] + 1]
    i = span[0] + 1
    while i < span[1]:
        line = lines[i]
        if _entry_key(line) in names:
            # an array value may continue on the next lines, up to its closing bracket
            depth = line.count("[") - line.count("]")
            while depth > 0 and i + 1 < span[1]:
                i += 1
                depth += lines[i].count("[") - lines[i].count("]")
        else:
            out.append(line)
        i += 1
    return out + lines[span[1] :]


def _without_mlops(data: dict) -> dict:
    tool = {k: v for k, v in data.get("tool", {}).items() if k != "mlops"}
    return {**data, "tool": tool}


def edit_declaration(text: str, remove_use_cases: list[str], remove_groups: list[str], add: dict[str, str]) -> str:
    """pyproject.toml with the samples' declaration lines removed and the new use case's line added at the end of
    `[tool.mlops.use-cases]`; checked by reading the result back (anything else there is left as it was)."""
    try:
        before = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(f"{DECLARATION_FILE}: not valid TOML ({exc})") from None
    lines = text.splitlines(keepends=True)
    lines = _remove_entries(lines, USE_CASES_TABLE, set(remove_use_cases))
    lines = _remove_entries(lines, GROUPS_TABLE, set(remove_groups))
    new_lines = [f'{name} = "{path}"\n' for name, path in add.items()]
    span = _table_span(lines, USE_CASES_TABLE)
    if span is None:
        lines += ["\n", f"[{USE_CASES_TABLE}]\n", *new_lines]
    else:
        # after the table's last entry (a comment before the next table belongs to that table)
        entries = [i for i in range(span[0] + 1, span[1]) if lines[i].strip() and not lines[i].lstrip().startswith("#")]
        last = max(entries, default=span[0])
        if not lines[last].endswith("\n"):
            lines[last] += "\n"
        lines[last + 1 : last + 1] = new_lines
    result = "".join(lines)
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(
            f"{DECLARATION_FILE}: could not edit [{USE_CASES_TABLE}] line by line ({exc}); edit it by hand"
        ) from None
    mlops_before = before.get("tool", {}).get("mlops", {})
    expected_use_cases = {k: v for k, v in mlops_before.get("use-cases", {}).items() if k not in remove_use_cases}
    expected_groups = {k: v for k, v in mlops_before.get("groups", {}).items() if k not in remove_groups}
    mlops_after = after.get("tool", {}).get("mlops", {})
    if (
        mlops_after.get("use-cases", {}) != {**expected_use_cases, **add}
        or mlops_after.get("groups", {}) != expected_groups
    ):
        raise BootstrapError(f"{DECLARATION_FILE}: could not edit [{USE_CASES_TABLE}] line by line; edit it by hand")
    if _without_mlops(after) != _without_mlops(before):
        raise BootstrapError(f"{DECLARATION_FILE}: editing the declaration changed other tables; edit it by hand")
    return result


# ---------------------------------------------------------------- the starter


def starter_files(kind: str) -> list[Path]:
    folder = STARTERS / kind
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not NEVER_COPIED_PARTS & set(p.relative_to(folder).parts)
    )


def write_starter(kind: str, target: Path, name: str, partition_column: str | None) -> list[str]:
    """The team's use case from a starter, names substituted; returns the paths written (relative)."""
    folder = STARTERS / kind
    written = []
    for source in starter_files(kind):
        rel = source.relative_to(folder).as_posix().replace(PLACEHOLDER, name)
        destination = target / rel
        if destination.exists():
            raise BootstrapError(f"the starter's {rel} would overwrite the template's: choose another --name")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in TEXT_SUFFIXES:
            text = source.read_text().replace(PLACEHOLDER_CLASS, camel(name)).replace(PLACEHOLDER, name)
            destination.write_text(text)
        else:
            shutil.copyfile(source, destination)
        written.append(rel)
    if partition_column and partition_column != STARTER_PARTITION_COLUMN:
        rename_partition_column(target, name, partition_column)
    return written


def rename_partition_column(target: Path, name: str, column: str) -> None:
    """The starter's partition column renamed in its configuration and in its data's header line.

    In the configuration the column is the JSON string token `"store"` (a key of `columns` and the entry of
    `partition_columns`): that token is replaced, keeping the file's layout, and the result is checked against the
    same rename done on the parsed JSON."""
    config_path = target / name / "config.json"
    text = config_path.read_text()
    config = json.loads(text)
    if column in config["columns"]:
        raise BootstrapError(f"invalid --partition-column {column!r}: the starter already has a column of that name")
    old = STARTER_PARTITION_COLUMN
    expected = {
        **config,
        "columns": {(column if key == old else key): spec for key, spec in config["columns"].items()},
        "partition_columns": [column if c == old else c for c in config["partition_columns"]],
    }
    renamed = text.replace(json.dumps(old), json.dumps(column))
    if json.loads(renamed) != expected:
        raise BootstrapError(f"{config_path}: the partition column {old!r} is not only a column name there")
    config_path.write_text(renamed)
    data_path = target / config["data"]["path"]
    header, _, rest = data_path.read_text().partition("\n")
    data_path.write_text(",".join(column if c == old else c for c in header.split(",")) + "\n" + rest)


def readme_header(name: str, kind: str, options: str, removed: list[Sample]) -> str:
    shape = "one model per partition" if kind == "many_models" else "one model"
    lines = [
        f"# {name}",
        "",
        f"Made from the MLOps template with `python bootstrap/bootstrap.py {options}`.",
        f"The use case is `{name}/` ({shape}): its configuration `{name}/config.json`, its sample data",
        f"`data/{name}.csv`, its tests `{name}/tests/`, declared in `pyproject.toml`. Replace its model and data",
        f"with yours (`{name}/README.md`); `make test`, then `make run`.",
    ]
    if removed:
        folders = ", ".join(f"`{s.folder}/`" for s in removed)
        lines += ["", f"The template's samples ({folders}) were removed; the template's text below still shows them."]
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------- the command


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bootstrap.py",
        description="Make a new project from this template: the samples removed, your use case from a starter.",
    )
    parser.add_argument("--name", required=True, help="the use case's package and model name, e.g. churn")
    parser.add_argument("--output", "--directory", dest="output", help="the new project's folder (new or empty)")
    parser.add_argument("--many-models", action="store_true", help="start from the many-models (partitioned) starter")
    parser.add_argument("--partition-column", help=f"the partition column's name (many models; default {'store'})")
    parser.add_argument("--keep-samples", action="store_true", help="keep the sample use cases next to yours")
    parser.add_argument("--ci", choices=CI_CHOICES, default="both", help="CI to keep (default: both)")
    parser.add_argument("--drop-ff", action="store_true", help="remove the ff sample (with --keep-samples: only it)")
    parser.add_argument("--drop-sample-data", action="store_true", help="(samples go with their data by default)")
    parser.add_argument("--quiet", action="store_true", help="print only refusals and errors")
    for option in GONE_OPTIONS:
        parser.add_argument(option, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option, message in GONE_OPTIONS.items():
        if getattr(args, option.lstrip("-").replace("-", "_")):
            raise BootstrapError(message)
    if not args.output:
        raise BootstrapError("no target: pass --output DIR (a new or empty folder for the project)")
    if args.partition_column is not None and not args.many_models:
        raise BootstrapError("--partition-column needs --many-models (a single model has no partitions)")
    if args.drop_sample_data and args.keep_samples:
        raise BootstrapError("--drop-sample-data with --keep-samples: the kept samples need their data; drop one")
    return args


def chosen_options(args: argparse.Namespace) -> str:
    """The command line's choices (not where the project went), for the new README."""
    words = ["--name", args.name]
    if args.many_models:
        words += ["--many-models", "--partition-column", args.partition_column or STARTER_PARTITION_COLUMN]
    if args.keep_samples:
        words += ["--keep-samples"] + (["--drop-ff"] if args.drop_ff else [])
    return " ".join([*words, "--ci", args.ci])


def check_target(target: Path, template: Path) -> None:
    if target == template or target.is_relative_to(template):
        raise BootstrapError(f"target {target} is inside the template {template}: choose a folder outside it")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BootstrapError(f"target {target} exists and is not an empty folder")
    if not target.parent.is_dir():
        raise BootstrapError(f"the parent folder of the target, {target.parent}, does not exist")


def bootstrap(args: argparse.Namespace, template: Path = TEMPLATE_ROOT) -> Plan:
    target = Path(args.output).expanduser().resolve()
    files = template_files(template)
    reserved = {rel.split("/")[0].removesuffix(".py") for rel in files} | NEVER_COPIED_PARTS | {"bench", "bootstrap"}
    reserved |= {s.folder for s in SAMPLES}
    problem = validate_name(args.name, reserved, installed_top_level_names())
    problem = problem or (validate_column(args.partition_column) if args.partition_column else None)
    if problem:
        raise BootstrapError(problem)
    check_target(target, template)
    if not (template / DECLARATION_FILE).is_file():
        raise BootstrapError(f"{template} has no {DECLARATION_FILE}: not the template")
    if args.keep_samples:
        removed = [s for s in SAMPLES if s.folder == "ff"] if args.drop_ff else []
    else:
        removed = list(SAMPLES)
    kind = "many_models" if args.many_models else "single_model"
    plan = plan_project(template, files, removed, args.ci, args.name)
    staging = Path(tempfile.mkdtemp(prefix=".bootstrap-", dir=target.parent))
    try:
        for rel in plan.copied:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(template / rel, staging / rel)
        for source, copy in plan.ci_copies.items():
            sample = next(s.folder for s in SAMPLES if source in s.ci_pipelines)
            (staging / copy).write_text((template / source).read_text().replace(sample, args.name))
            # other pipelines that start after the sample's (promote.yml) now start after the copy: the one
            # reference is the pipeline's file name, replaced exactly
            old_name, new_name = Path(source).stem, Path(copy).stem
            for rel in plan.copied:
                if rel.startswith((".pipelines/", ".github/workflows/")) and rel.endswith((".yml", ".yaml")):
                    text = (staging / rel).read_text()
                    if old_name in text:
                        (staging / rel).write_text(text.replace(old_name, new_name))
        write_starter(kind, staging, args.name, args.partition_column)
        declaration = staging / DECLARATION_FILE
        text = edit_declaration(
            declaration.read_text(),
            plan.removed_use_cases,
            plan.removed_groups,
            {args.name: f"{args.name}/config.json"},
        )
        declaration.write_text(text)
        readme = staging / "README.md"
        options = chosen_options(args)
        old = readme.read_text() if readme.is_file() else ""
        readme.write_text(readme_header(args.name, kind, options, removed) + old)
        if target.exists():
            target.rmdir()  # empty (checked): replaced by the finished project in one rename
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return plan


def report(plan: Plan, args: argparse.Namespace) -> str:
    """What was done: the files removed (a removed sample folder as one line), the CI copies, the declaration."""
    lines = [f"{args.output}: {len(plan.copied)} files copied from the template, {len(plan.deleted)} removed"]
    shown: set[str] = set()
    for rel, reason in sorted(plan.deleted.items()):
        top = rel.split("/")[0]
        whole = "/" in rel and not any(p.startswith(top + "/") for p in plan.copied)
        same = [p for p, why in plan.deleted.items() if p.startswith(top + "/") and why == reason]
        alike = len(same) == sum(1 for p in plan.deleted if p.startswith(top + "/"))
        if whole and alike and reason.startswith(("the ", "--ci")):
            if top not in shown:  # a folder removed whole, for one reason: one line
                lines.append(f"  removed {top}/ ({reason}, {len(same)} files)")
                shown.add(top)
            continue
        lines.append(f"  removed {rel} ({reason})")
    for source, copy in plan.ci_copies.items():
        lines.append(f"  wrote {copy} (from {source}, for the use case {args.name})")
    for use_case in plan.removed_use_cases:
        lines.append(f"  {DECLARATION_FILE}: removed the use case {use_case}")
    for group in plan.removed_groups:
        lines.append(f"  {DECLARATION_FILE}: removed the group {group}")
    lines.append(f"  {DECLARATION_FILE}: declared {args.name} = {args.name}/config.json")
    lines.append(f"next: cd {args.output} && git init && make test && make run")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        plan = bootstrap(args)
    except BootstrapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(report(plan, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
