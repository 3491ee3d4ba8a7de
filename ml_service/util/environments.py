"""The deployment environments (dev, test, prod) of `environments.yml`, for both CI systems.

    python -m ml_service.util.environments --branch REF [--environment NAME] [--format shell|json]

Prints the settings of one environment: the one named by --environment, else the one the branch maps to
(`branches:`, first matching pattern). `--format shell` prints `export NAME=value` lines for `eval` in the same
shell step (Azure DevOps' AzureCLI@2 script and the GitHub composite action do exactly that), so the workspace
and resource group come from this one file in both CI systems. Unknown environment or unmapped branch: one line
on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shlex
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = REPO_ROOT / "environment_setup" / "environments.yml"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.()-]*$"  # resource group / workspace / registry name characters


class EnvironmentsError(ValueError):
    """The file or the request is wrong; the message names the fix."""


class Environment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    resource_group: str = Field(pattern=NAME, max_length=90)
    workspace: str = Field(pattern=NAME, max_length=33)
    # For the infrastructure workflows: the region, and the 3-10 character prefix of every resource name.
    location: str = Field(default="", pattern=r"^[a-z0-9]*$")
    base_name: str = Field(default="", pattern=r"^([a-z0-9]{3,10})?$")
    subscription_id: str = ""


class Environments(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: str = Field(pattern=NAME, max_length=33)
    environments: dict[str, Environment]
    promotion: list[str]
    branches: dict[str, str]

    @model_validator(mode="after")
    def _names_exist(self) -> Environments:
        known = set(self.environments)
        for where, names in (("promotion", self.promotion), ("branches", list(self.branches.values()))):
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"{where} names {unknown}, not under environments: ({sorted(known)})")
        if len(set(self.promotion)) != len(self.promotion) or len(self.promotion) < 2:
            raise ValueError("promotion must list at least two different environments, in order")
        return self

    def for_branch(self, ref: str) -> str:
        branch = ref.removeprefix("refs/heads/")
        for pattern, name in self.branches.items():
            if fnmatch.fnmatchcase(branch, pattern):
                return name
        raise EnvironmentsError(
            f"branch {branch!r} maps to no environment: add it under branches: in environments.yml "
            f"(or pass --environment {'|'.join(self.environments)})"
        )

    def get(self, name: str) -> Environment:
        if name not in self.environments:
            known = ", ".join(self.environments)
            raise EnvironmentsError(f"no environment {name!r} in environments.yml (known: {known})")
        return self.environments[name]

    def next_after(self, name: str) -> str | None:
        """The environment a model goes to after `name` in the promotion order (None after the last)."""
        if name not in self.promotion:
            raise EnvironmentsError(f"{name!r} is not in promotion: of environments.yml")
        index = self.promotion.index(name)
        return self.promotion[index + 1] if index + 1 < len(self.promotion) else None

    def variables(self, name: str) -> dict[str, str]:
        """The process environment of a step working in `name` (what ml_service.util.env_variables reads)."""
        env = self.get(name)
        result = {
            "DEPLOY_ENVIRONMENT": name,
            "RESOURCE_GROUP": env.resource_group,
            "WORKSPACE_NAME": env.workspace,
            "AZUREML_REGISTRY_NAME": self.registry,
        }
        if env.location:
            result["LOCATION"] = env.location
        if env.base_name:
            result["BASE_NAME"] = env.base_name
        if env.subscription_id:
            result["AZURE_SUBSCRIPTION_ID"] = env.subscription_id
        return result


def load(path: Path = DEFAULT_FILE) -> Environments:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise EnvironmentsError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise EnvironmentsError(f"{path}: not YAML: {' '.join(str(exc).split())}") from None
    try:
        return Environments.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise EnvironmentsError(f"{path}: {where}: {first['msg']}") from None


def render(variables: dict[str, str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(variables, indent=1, sort_keys=True)
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in variables.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_service.util.environments", description=__doc__.splitlines()[0])
    parser.add_argument("--branch", default="", help="the run's branch (refs/heads/... or a plain name)")
    parser.add_argument("--environment", default="", help="an environment name; wins over --branch when given")
    parser.add_argument("--format", choices=("shell", "json"), default="shell", help="output format (default shell)")
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="the environments file (default: the repo's)")
    args = parser.parse_args(argv)
    try:
        config = load(args.file)
        if not args.environment and not args.branch:
            raise EnvironmentsError("give --branch REF or --environment NAME")
        name = args.environment or config.for_branch(args.branch)
        print(render(config.variables(name), args.format))
    except EnvironmentsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
