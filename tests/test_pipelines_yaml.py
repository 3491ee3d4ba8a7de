"""Checks of the Azure DevOps YAML in .pipelines/ and environment_setup/, offline.

Azure DevOps is not reachable from here, so these tests check what can be checked without it:
- every pipeline and step/job/stage template validates against the Azure Pipelines schema (check-jsonschema);
- the variables-only template (which the schema cannot express) has the expected structure;
- every `template:` reference points at an existing file;
- every `python -m <module>` the YAML runs exists, answers `--help` and accepts the options it is given;
- every Azure ML run the YAML starts (`run_pipeline --use-case ...`) is executed locally as a dry run: the job
  renders and validates offline, and each step's cloud command names a module of the one step set
  (`ml_service.pipelines.steps.<step>`, the train step as a parallel job) that accepts the options it is given;
- every `make <target>` the YAML runs is a target of the Makefile.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ml_service.config import declared_groups, declared_use_cases
from tests.conftest import REPO_ROOT as REPO
from tests.conftest import run_module
from tests.conftest import yaml_mappings as _mappings
from tests.conftest import yaml_strings as _strings

BIN = Path(sys.executable).parent

RUN_PIPELINE = "ml_service.pipelines.azureml.run_pipeline"
STEPS = ("prepare", "train", "evaluate", "register")
BATCH_STEPS = ("plan", "score", "combine")  # run_pipeline --pipeline batch-score: stages of one step module
BATCH_MODULE = "ml_service.pipelines.steps.batch_score"
MONITOR_STEPS = ("monitor",)  # run_pipeline --pipeline monitor: the monitor step alone
MONITOR_MODULE = "ml_service.pipelines.steps.monitor"
STEP_MODULES = {f"ml_service.pipelines.steps.{step}" for step in STEPS} | {BATCH_MODULE, MONITOR_MODULE}
PARALLEL_ENTRY = "ml_service/pipelines/azureml/parallel_entry.py"
BATCH_PARALLEL_ENTRY = "ml_service/pipelines/azureml/batch_parallel_entry.py"
PLACEHOLDER = re.compile(r"\$\{\{[^}]*\}\}")

YAML_DIRS = (REPO / ".pipelines", REPO / "environment_setup")
VARIABLE_GROUPS = {"devopsforai-aml-vg", "mmmo-vg"}

PYTHON_M = re.compile(r"(?<![\w/.-])python(?:3(?:\.11)?)?\s+-m\s+([A-Za-z_][\w.]*)(.*)")
MAKE = re.compile(r"(?<![\w/.-])make\s+([A-Za-z][\w-]*)")
OPTION = re.compile(r"(?<!\S)(--[A-Za-z][\w-]*)")


# environment_setup/ also holds YAML that is not Azure DevOps YAML: the deployment environments both CI systems read
NOT_PIPELINES = {REPO / "environment_setup" / "environments.yml"}


def _yaml_files() -> list[Path]:
    files = sorted(p for d in YAML_DIRS for p in d.rglob("*.yml"))
    files += sorted(p for d in YAML_DIRS for p in d.rglob("*.yaml"))
    return [p for p in files if p not in NOT_PIPELINES]


def _load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _is_variables_template(doc) -> bool:
    """A file holding only `variables:` (and maybe `parameters:`): the schema has no form for it."""
    return isinstance(doc, dict) and "variables" in doc and set(doc) <= {"variables", "parameters"}


YAML_FILES = _yaml_files()
VARIABLE_TEMPLATES = [p for p in YAML_FILES if _is_variables_template(_load(p))]
SCHEMA_CHECKED = [p for p in YAML_FILES if p not in VARIABLE_TEMPLATES]


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _walk(node, key=None):
    """Yield (key, value) for every mapping entry, recursively; list items carry their parent's key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def _python_m_calls() -> dict[str, list[tuple[str, set[str]]]]:
    """module -> [(file, options passed)] for every `python -m module ...` line in the YAML."""
    calls: dict[str, list[tuple[str, set[str]]]] = {}
    for path in YAML_FILES:
        for text in _strings(_load(path)):
            for line in text.splitlines():
                for match in PYTHON_M.finditer(line):
                    module, rest = match.group(1), match.group(2)
                    calls.setdefault(module, []).append((_rel(path), set(OPTION.findall(rest))))
    return calls


CALLS = _python_m_calls()
ML_SERVICE_MODULES = sorted(m for m in CALLS if m.split(".")[0] == "ml_service")
OTHER_MODULES = sorted(m for m in CALLS if m.split(".")[0] != "ml_service")


def _contract_modules() -> set[str]:
    """Modules named in docs/contracts.md; `.name` right after a module means a sibling of it."""
    text = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    modules: set[str] = set()
    last = None
    for token in re.findall(r"`(\.?[A-Za-z_][\w.]*)", text):
        if token.startswith("ml_service."):
            last = token
            modules.add(token)
        elif token.startswith(".") and last:
            modules.add(last.rsplit(".", 1)[0] + token)
    return modules


# --- the files themselves -------------------------------------------------------------------------


def test_the_expected_pipelines_exist():
    """The platform's pipelines; the use cases' own are derived from the declaration (every use case is trained
    by some pipeline: test_every_declared_use_case_is_trained_by_a_pipeline)."""
    names = {_rel(p) for p in YAML_FILES}
    expected = {
        ".pipelines/pr.yml",
        ".pipelines/promote.yml",
        ".pipelines/variables-template.yml",
        "environment_setup/docker-image-pipeline.yml",
        "environment_setup/iac-create-environment-pipeline-bicep.yml",
        "environment_setup/iac-create-environment-pipeline-tf.yml",
        "environment_setup/iac-remove-environment-pipeline.yml",
    }
    assert expected <= names, f"missing: {sorted(expected - names)}"
    assert [_rel(p) for p in VARIABLE_TEMPLATES] == [".pipelines/variables-template.yml"]


# Tasks newer than the Azure Pipelines schema vendored in check-jsonschema, with their documented inputs
# (learn.microsoft.com task reference). The schema has PublishCodeCoverageResults@1 only, already deprecated.
NEWER_TASKS = {
    "PublishCodeCoverageResults@2": {
        "properties": {
            "summaryFileLocation": {"type": "string"},
            "pathToSources": {"type": "string"},
            "failIfCoverageEmpty": {"type": "boolean"},
        },
        "required": ["summaryFileLocation"],
    },
}


def _schema_with_newer_tasks(folder: Path) -> Path:
    """The vendored schema plus NEWER_TASKS, each as strict as the schema's own task entries."""
    import json

    import check_jsonschema

    vendored = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "azure-pipelines.json"
    schema = json.loads(vendored.read_text(encoding="utf-8"))
    tasks = schema["definitions"]["task"]["anyOf"]
    for name, inputs in NEWER_TASKS.items():
        assert not any(t.get("properties", {}).get("task", {}).get("pattern") == f"^{name}$" for t in tasks), name
        tasks.append(
            {
                "properties": {
                    "task": {"pattern": f"^{re.escape(name)}$"},
                    "inputs": {**inputs, "type": "object", "additionalProperties": False},
                },
                "required": ["task", "inputs"],
            }
        )
    path = folder / "azure-pipelines-schema.json"
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


def test_pipelines_and_templates_match_the_azure_pipelines_schema(tmp_path):
    tool = BIN / "check-jsonschema"
    assert tool.exists(), f"{tool} not found: run `make setup`"
    result = subprocess.run(
        [str(tool), "--schemafile", str(_schema_with_newer_tasks(tmp_path)), "--regex-variant", "python"]
        + [str(p) for p in SCHEMA_CHECKED],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_template_expression_keys():
    """`${{ if }}` / `${{ each }}` keys defeat the schema check: use `condition:` or parameters instead."""
    offenders = [
        f"{_rel(p)}: {k}" for p in SCHEMA_CHECKED for k, _ in _walk(_load(p)) if isinstance(k, str) and "${{" in k
    ]
    assert not offenders, offenders


def test_variables_template_structure():
    doc = _load(REPO / ".pipelines" / "variables-template.yml")
    assert set(doc) == {"variables"}
    variables = doc["variables"]
    assert isinstance(variables, list) and variables
    for entry in variables:
        assert set(entry) == {"name", "value"}, entry
        assert isinstance(entry["value"], str), f"{entry['name']}: quote the value"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", entry["name"]), entry["name"]
    names = [entry["name"] for entry in variables]
    assert len(names) == len(set(names)), "duplicate variable names"
    values = {entry["name"]: entry["value"] for entry in variables}
    for required in ("PYTHON_VERSION", "AGENT_VM_IMAGE", "AML_COMPUTE_CLUSTER_NAME"):
        assert required in values, required
    assert values["PYTHON_VERSION"] == "3.11"
    # Secrets and per-environment values belong in the variable groups, never here.
    for secret in ("SCORING_API_KEY", "APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_SUBSCRIPTION_ID"):
        assert secret not in values


def test_template_references_resolve():
    missing = []
    for path in YAML_FILES:
        for key, value in _walk(_load(path)):
            if key != "template" or not isinstance(value, str):
                continue
            target = REPO / value.lstrip("/") if value.startswith("/") else path.parent / value
            if not target.is_file():
                missing.append(f"{_rel(path)} -> {value}")
    assert not missing, missing


def test_pipelines_use_their_variable_group():
    for path in YAML_FILES:
        if path in VARIABLE_TEMPLATES or "templates" in path.parts:
            continue
        doc = _load(path)
        groups = {v["group"] for v in doc.get("variables", []) if isinstance(v, dict) and "group" in v}
        assert groups <= VARIABLE_GROUPS | {"${{ parameters.variableGroup }}"}, (_rel(path), groups)
        if any(file == _rel(path) for file, _ in RUN_PIPELINE_CALLS):
            # an Azure ML run needs the workspace the variable group names, and one workspace
            assert len(groups) == 1, (_rel(path), groups)


def test_service_connections_are_compile_time_values():
    """A service connection given as a macro from a variable group, `$(X)`, fails authorization: Azure DevOps
    authorizes connections before it expands macros. Every task names it with a compile-time variable defined in
    YAML (variables-template.yml, or the pipeline's own variables)."""
    template_values = {
        v["name"]: v["value"] for v in _load(REPO / ".pipelines" / "variables-template.yml")["variables"]
    }
    checked = 0
    for path in YAML_FILES:
        doc = _load(path)
        own = {v["name"] for v in doc.get("variables", []) if isinstance(v, dict) and "name" in v}
        for key, value in _walk(doc):
            if key in ("azureSubscription", "azureResourceManagerConnection", "containerRegistry"):
                checked += 1
                match = re.fullmatch(r"\$\{\{ variables\.([A-Z_]+) \}\}", str(value))
                assert match, (_rel(path), key, value)
                assert match.group(1) in template_values or match.group(1) in own, (_rel(path), value)
    assert checked >= 8
    assert template_values["AZURE_RM_SVC_CONNECTION"]


def test_code_coverage_is_published_with_the_current_task():
    tasks = {m["task"] for p in YAML_FILES for m in _mappings(_load(p)) if "task" in m}
    assert "PublishCodeCoverageResults@2" in tasks and "PublishCodeCoverageResults@1" not in tasks


RUN_TEMPLATE = "templates/azure-ml-run-template.yml"


def _run_pipeline_calls() -> list[tuple[str, list[str]]]:
    """(file, arguments) of every Azure ML run the YAML starts: each use of the run template (submit, wait and
    check of one job, with its parameters), and any `python -m ...run_pipeline ...` line outside that template."""
    calls = []
    for path in YAML_FILES:
        if path.name == Path(RUN_TEMPLATE).name:
            continue  # its lines hold ${{ parameters.* }}: the uses of the template below carry the values
        document = _load(path)
        for mapping in _mappings(document):
            if mapping.get("template") == RUN_TEMPLATE:
                parameters = mapping.get("parameters") or {}
                extra = shlex.split(str(parameters.get("extraArguments", "")))
                calls.append((_rel(path), ["--use-case", str(parameters["useCase"]), *extra]))
        for text in _strings(document):
            for line in text.splitlines():
                for match in PYTHON_M.finditer(line):
                    if match.group(1) == RUN_PIPELINE:
                        calls.append((_rel(path), shlex.split(match.group(2))))
    return calls


RUN_PIPELINE_CALLS = _run_pipeline_calls()


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_yaml_runs_declared_use_cases_and_steps():
    """`--use-case` names a declared use case or group (pyproject.toml), `--steps` only steps of the one set."""
    assert RUN_PIPELINE_CALLS, "the pipelines start no Azure ML run"
    known = set(declared_use_cases(REPO)) | set(declared_groups(REPO))
    for file, args in RUN_PIPELINE_CALLS:
        names = (_option(args, "--use-case") or "").split(",")
        assert names != [""] and set(names) <= known, (file, names, sorted(known))
        assert set((_option(args, "--steps") or ",".join(STEPS)).split(",")) <= set(STEPS), (file, args)


def test_every_declared_use_case_is_trained_by_a_pipeline():
    """Each group, and each use case in no group, has a pipeline whose Azure ML run trains it (all steps, or at
    least train)."""
    groups = declared_groups(REPO)
    grouped = {member for members in groups.values() for member in members}
    expected = set(groups) | (set(declared_use_cases(REPO)) - grouped)
    trained = {
        name
        for _, args in RUN_PIPELINE_CALLS
        if "train" in (_option(args, "--steps") or "train").split(",")
        for name in (_option(args, "--use-case") or "").split(",")
    }
    assert expected <= trained, f"no pipeline trains {sorted(expected - trained)}"


MACRO = re.compile(r"\$\([A-Za-z_.]+\)")


def _stand_in(args: tuple[str, ...], folder: Path) -> list[str]:
    """The run's arguments with each value the CI fills in at run time (`$(ENDPOINT_NAME)`, a file an earlier
    stage wrote) replaced by a real one: an endpoint name, a folder, a retrain file selecting one model of each
    member use case."""
    out = list(args)
    for i, value in enumerate(out):
        if i == 0 or not MACRO.search(value):
            continue
        option = out[i - 1]
        if option == "--retrain-from":
            names = (_option(out, "--use-case") or "").split(",")
            members = [m for name in names for m in declared_groups(REPO).get(name, [name])]
            path = folder / "retrain.json"
            path.write_text(json.dumps({member: [""] for member in members}))
            out[i] = str(path)
        elif option in ("--endpoint", "--deployment"):
            out[i] = "stand-in-endpoint"
        else:
            out[i] = str(folder / "stand-in" / Path(MACRO.sub("", value)).name)
    return out


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> dict[tuple[str, ...], tuple[subprocess.CompletedProcess, Path]]:
    """Each distinct run the YAML starts, executed here as a dry run (`--wait` is the cloud's part; the job is
    rendered, validated by the SDK offline and written with the code snapshot it would upload)."""
    out: dict[tuple[str, ...], tuple[subprocess.CompletedProcess, Path]] = {}
    for _, args in RUN_PIPELINE_CALLS:
        key = tuple(a for a in args if a != "--wait")
        if key not in out:
            folder = tmp_path_factory.mktemp("dry-run")
            # module scope runs before the per-test settings fixture: pin the local store here
            env = {"LOCAL_DIR": str(folder / "local")}
            run = _stand_in(key, folder)
            result = run_module(RUN_PIPELINE, *run, "--dry-run", "--output", str(folder / "job"), env=env, timeout=300)
            out[key] = (result, folder / "job")
    return out


@pytest.fixture(scope="module")
def step_help() -> dict[str, str]:
    """`--help` of each module of the one step set."""
    out = {}
    for module in sorted(STEP_MODULES):
        result = run_module(module, "--help", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        out[module] = result.stdout
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("file", "args"), RUN_PIPELINE_CALLS, ids=[" ".join(a) for _, a in RUN_PIPELINE_CALLS])
def test_azure_ml_runs_of_the_yaml_render_locally(file, args, dry_runs, step_help):
    result, folder = dry_runs[tuple(a for a in args if a != "--wait")]
    assert result.returncode == 0, f"{file}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    job = yaml.safe_load((folder / "pipeline.yml").read_text())
    batch = _option(args, "--pipeline") == "batch-score"
    monitoring = _option(args, "--pipeline") == "monitor"
    default = MONITOR_STEPS if monitoring else BATCH_STEPS if batch else STEPS
    steps = (_option(args, "--steps") or ",".join(default)).split(",")
    assert list(job["jobs"]) == steps, (file, list(job["jobs"]))
    use_cases = (_option(args, "--use-case") or "").split(",")
    members = [m for name in use_cases for m in declared_groups(REPO).get(name, [name])]
    for name, step in job["jobs"].items():
        component = step["component"]
        if step["type"] == "parallel":  # the many-models fan-out (train, or batch score) as an Azure ML parallel job
            entry = BATCH_PARALLEL_ENTRY if batch else PARALLEL_ENTRY
            assert name == ("score" if batch else "train") and component["task"]["entry_script"] == entry
            assert (folder / "code" / entry).is_file()
            continue
        command = shlex.split(PLACEHOLDER.sub("X", component["command"]))
        module = BATCH_MODULE if batch else f"ml_service.pipelines.steps.{name}"
        assert command[:2] == ["python", "-m"] and command[2] == module, command
        if name in ("prepare", "plan", "monitor"):  # a group runs as its declared members
            assert _option(command, "--use-case").split(",") == members, command
        if _option(args, "--retrain-from") and name == "prepare":  # prepare plans only what the file selects
            assert _option(command, "--retrain-from") == "X", command
        assert (folder / "code" / Path(*command[2].split("."))).with_suffix(".py").is_file()
        used = [a for a in command[3:] if a.startswith("--")]
        unknown = [o for o in used if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", step_help[command[2]])]
        assert not unknown, f"{command[2]} --help does not list {unknown}, which the job passes"


def test_make_targets_exist():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:", makefile, flags=re.MULTILINE))
    used = {
        (_rel(path), target) for path in YAML_FILES for text in _strings(_load(path)) for target in MAKE.findall(text)
    }
    assert used, "the pipelines run no make target"
    assert not [u for u in used if u[1] not in targets], sorted(u for u in used if u[1] not in targets)


def _steps_of_jobs(node):
    """Every `steps:` list in a document (jobs, deployment strategies), recursively."""
    for mapping in _mappings(node):
        if isinstance(mapping.get("steps"), list):
            yield mapping["steps"]


def test_deployments_pass_what_their_target_needs():
    """ACI pulls with the identity in ACI_PULL_IDENTITY_ID; an online endpoint's smoke test uses --package."""
    aci_calls = [options for file, options in CALLS["ml_service.scoring.deploy.aci"]]
    assert aci_calls and all("--pull-identity" in options for options in aci_calls)
    endpoint_stages = 0
    for path in YAML_FILES:
        text = path.read_text(encoding="utf-8")
        if "ml_service.scoring.deploy.aci" in text:
            assert "--pull-identity $(ACI_PULL_IDENTITY_ID)" in text, _rel(path)
        for steps in _steps_of_jobs(_load(path)):
            commands = [s.get("parameters", {}).get("command", "") for s in steps if isinstance(s, dict)]
            if not any("ml_service.scoring.deploy.online_endpoint" in c for c in commands):
                continue
            endpoint_stages += 1
            downloads = [s for s in steps if isinstance(s, dict) and s.get("download") == "current"]
            # The package tested in QA, or (promotion) one built in this job from the registry's models.
            built_here = [s for s in steps if "ml_service.scoring.package" in str(s.get("script", ""))]
            assert any(s.get("artifact") == "package" for s in downloads) or any(
                "--output $(Pipeline.Workspace)/package" in s["script"] for s in built_here
            ), _rel(path)
            smoke = [
                s for s in steps if isinstance(s, dict) and s.get("template") == "templates/smoke-test-template.yml"
            ]
            assert smoke and all(s["parameters"].get("packageDir") == "$(Pipeline.Workspace)/package" for s in smoke)
    assert endpoint_stages >= 1
    template = (REPO / ".pipelines/templates/smoke-test-template.yml").read_text(encoding="utf-8")
    assert '--package "${{ parameters.packageDir }}"' in template


DEPLOYERS = ("aci", "online_endpoint", "webapp")


def _command_option(command: str, name: str) -> str | None:
    words = shlex.split(command)
    return words[words.index(name) + 1] if name in words else None


def _stage_commands(path: Path) -> dict[str, list[str]]:
    """Stage name -> the `python -m` commands of its azure-python steps (templates of package-template expanded)."""
    template = _load(REPO / ".pipelines/templates/package-template.yml")
    packaged = [s["parameters"]["command"] for s in template["steps"] if "parameters" in s]
    found: dict[str, list[str]] = {}
    for stage in _load(path).get("stages", []):
        commands = []
        for steps in _steps_of_jobs(stage):
            for step in steps:
                if step.get("template") == "templates/package-template.yml":
                    commands += packaged
                elif "python -m" in str(step.get("parameters", {}).get("command", "")):
                    commands.append(" ".join(step["parameters"]["command"].split()))
        found[stage["stage"]] = commands
    return found


def _downloads(stage: dict) -> dict[str, str]:
    """Where each `package` artifact a stage downloads lands: {pipeline resource: folder}."""
    found = {}
    for steps in _steps_of_jobs(stage):
        for step in steps:
            if isinstance(step, dict) and step.get("artifact") == "package" and "download" in step:
                where = step["download"]
                found[where] = "$(Pipeline.Workspace)/" + ("" if where == "current" else f"{where}/") + "package"
    return found


def test_qa_and_production_deploy_the_one_image_built_once():
    """The image is built once per package (deploy.image, after packaging, recorded by digest in the package's
    image.json): a stage that deploys either builds the image of the package it made, once, and deploys that,
    or builds none and deploys the image recorded in a `package` artifact it downloaded (the one QA tested)."""
    publish = _load(REPO / ".pipelines/templates/package-template.yml")["steps"][-1]
    from_artifact = 0
    for path in sorted((REPO / ".pipelines").glob("*.yml")):
        stages = {stage["stage"]: stage for stage in _load(path).get("stages", [])}
        for name, commands in _stage_commands(path).items():
            where = f"{_rel(path)}: {name}"
            builds = [c for c in commands if "ml_service.scoring.deploy.image" in c]
            deploys = [c for c in commands if any(f"ml_service.scoring.deploy.{d} " in c + " " for d in DEPLOYERS)]
            for command in builds + deploys:
                assert (
                    _command_option(command, "--image-file") == _command_option(command, "--package") + "/image.json"
                ), command
            if builds:
                assert len(builds) == 1, where
                (build,) = builds
                assert {_command_option(c, "--package") for c in deploys} <= {_command_option(build, "--package")}
            elif deploys:
                downloaded = set(_downloads(stages[name]).values())
                assert downloaded and {_command_option(c, "--package") for c in deploys} <= downloaded, where
                from_artifact += 1
    assert from_artifact >= 1, "no stage deploys the image of a package tested earlier"
    # The package template publishes the package (with image.json) from where the QA stages build its image.
    assert publish["inputs"]["targetPath"] == "$(Build.ArtifactStagingDirectory)/package"


def test_web_app_smoke_tests_wait_as_long_as_app_service_may_take_to_start():
    """Every Web App deployment is followed by a smoke test that waits longer than the container start limit the
    deployment gives App Service (ml_service.scoring.deploy.webapp)."""
    from ml_service.scoring.deploy import webapp

    deploying = [p for p in YAML_FILES if "ml_service.scoring.deploy.webapp" in p.read_text(encoding="utf-8")]
    assert deploying, "no pipeline deploys the Web App"
    for path in deploying:
        checked = 0
        for steps in _steps_of_jobs(_load(path)):
            for i, step in enumerate(steps):
                if "deploy.webapp" in str(step.get("parameters", {}).get("command", "")):
                    smoke = steps[i + 1]
                    assert smoke["template"] == "templates/smoke-test-template.yml", _rel(path)
                    assert int(smoke["parameters"]["timeoutSeconds"]) > webapp.START_TIME_LIMIT_S, _rel(path)
                    checked += 1
        assert checked, f"{_rel(path)} runs deploy.webapp outside a step the test understands"
    template = (REPO / ".pipelines/templates/smoke-test-template.yml").read_text()
    assert template.count('--timeout "${{ parameters.timeoutSeconds }}"') == 2
