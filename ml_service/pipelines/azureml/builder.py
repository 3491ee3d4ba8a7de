"""Render a `PipelineSpec` (the one pipeline definition) as an Azure ML SDK v2 pipeline job.

- a "command" step becomes `azure.ai.ml.command(...)` running `python -m <module> <arguments>`, where the
  arguments come from `StepSpec.arguments` with `${{inputs.x}}` / `${{outputs.y}}` placeholders: the cloud runs
  exactly the command line the local runner runs, with Azure ML's mounted paths instead of local ones;
- a "parallel" step becomes `parallel_run_function(...)` whose entry script (`parallel_entry.py`) gets the
  same arguments as `program_arguments` and trains each model of its mini-batch with the local runner's
  per-model function.

Nothing here needs credentials: the job object is built and checked offline (`_validate()`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ml_service.config import Parallel
from ml_service.pipelines.definition import PIPELINE_INPUT, PipelineSpec, StepSpec

PARALLEL_ENTRY_SCRIPT = "ml_service/pipelines/azureml/parallel_entry.py"
# The parallel driver parses its own `--output` (and other options) from the same command line as the entry
# script: an option whose value is one of the step's outputs is passed to the entry script under this prefix.
PARALLEL_OUTPUT_PREFIX = "--mlops-"
_PLACEHOLDER = re.compile(r"^\$\{\{(inputs|outputs)\.[A-Za-z_][A-Za-z0-9_]*\}\}$")


# The knobs of an Azure ML parallel job are a use case's `parallel` section (`ml_service.config.Parallel`): one
# schema for the local fan-out and the cloud job.
ParallelSettings = Parallel


def command_line(arguments: Iterable[str]) -> str:
    """Shell-join arguments, leaving whole `${{...}}` placeholders unquoted (Azure ML substitutes them)."""
    return " ".join(a if _PLACEHOLDER.match(a) else shlex.quote(a) for a in arguments)


def step_arguments(step: StepSpec) -> list[str]:
    """The step's arguments with Azure ML placeholders for its inputs and outputs."""
    inputs = {name: f"${{{{inputs.{name}}}}}" for name in step.inputs}
    outputs = {name: f"${{{{outputs.{name}}}}}" for name in step.outputs}
    return step.arguments(inputs, outputs)


def step_command(step: StepSpec) -> str:
    """`python -m <module> <arguments>`: what a command step runs in the cloud."""
    return command_line(["python", "-m", step.module, *step_arguments(step)])


def parallel_arguments(step: StepSpec) -> list[str]:
    """The step's arguments for a parallel entry script: `--output X` becomes `--mlops-output X` when X is one
    of the step's outputs, so it cannot collide with the parallel driver's own `--output`."""
    args = step_arguments(step)
    outputs = {f"${{{{outputs.{name}}}}}" for name in step.outputs}
    return [
        PARALLEL_OUTPUT_PREFIX + a[2:] if a.startswith("--") and i + 1 < len(args) and args[i + 1] in outputs else a
        for i, a in enumerate(args)
    ]


def mini_batch_input(step: StepSpec) -> str:
    """The input a parallel step splits into mini-batches: the first one an earlier step produces."""
    from_steps = [key for key, b in step.inputs.items() if b.source != PIPELINE_INPUT]
    if not from_steps:
        raise ValueError(f"parallel step {step.name} needs an input from an earlier step to split into mini-batches")
    return from_steps[0]


def input_type(path: Path) -> str:
    return "uri_folder" if path.is_dir() else "uri_file"


def pipeline_input(value: Any):
    """A pipeline input: a local path (uploaded on submission; a folder or a file), or an `azure.ai.ml.Input`
    given as is, e.g. a datastore folder already in the cloud (`azureml://datastores/...`)."""
    from azure.ai.ml import Input

    if isinstance(value, Input):
        return value
    return Input(type=input_type(Path(value)), path=str(value))


def select_steps(spec: PipelineSpec, names: Iterable[str] | None) -> tuple[StepSpec, ...]:
    """The named steps (all when None), in pipeline order; each must only need pipeline inputs or chosen steps."""
    if not names:
        return spec.steps
    wanted = set(names)
    unknown = wanted - {s.name for s in spec.steps}
    if unknown:
        known = ", ".join(s.name for s in spec.steps)
        raise ValueError(f"pipeline {spec.name}: no step(s) {', '.join(sorted(unknown))} (steps: {known})")
    chosen = tuple(s for s in spec.steps if s.name in wanted)
    for step in chosen:
        for key, binding in step.inputs.items():
            if binding.source != PIPELINE_INPUT and binding.source not in wanted:
                raise ValueError(f"step {step.name} input {key} needs step {binding.source}: select it too")
    return chosen


def build_pipeline_job(
    spec: PipelineSpec,
    *,
    code: Path,
    environment: Any,
    inputs: Mapping[str, Any],
    compute: str,
    experiment_name: str,
    parallel: ParallelSettings | None = None,
    steps: Iterable[str] | None = None,
    tags: Mapping[str, str] | None = None,
    parallel_environment: Any = None,
    environment_variables: Mapping[str, str] | None = None,
    cacheable: Iterable[str] = (),
):
    """The Azure ML `PipelineJob` of `spec`: one node per step, wired like the local runner wires folders.

    inputs: a local path or an `azure.ai.ml.Input` per pipeline input (pipeline_input).
    parallel_environment: what parallel steps run in (default: `environment`); Azure ML's parallel driver needs
    packages the command steps do not (environment.build_parallel_environment).
    environment_variables: set on every step, e.g. the build's lineage (BUILD_ID, BUILD_URI, GIT_COMMIT) that the
    register steps record as tags; the code snapshot has no .git and the cloud has no CI variables.
    cacheable: names of the steps Azure ML may reuse from an earlier run with the same inputs and code. None by
    default: a step reading or writing the tracking server or registry (evaluate against production, register)
    gives a different answer on a rerun of the same commit, and a reused one registers nothing.
    """
    from azure.ai.ml import Input, Output, command
    from azure.ai.ml.entities import PipelineJob
    from azure.ai.ml.parallel import RunFunction, parallel_run_function

    parallel = parallel or ParallelSettings()
    chosen = select_steps(spec, steps)
    needed = {b.name for s in chosen for b in s.inputs.values() if b.source == PIPELINE_INPUT}
    missing = needed - set(inputs)
    if missing:
        raise ValueError(f"pipeline {spec.name}: no path for pipeline input(s) {', '.join(sorted(missing))}")
    pipeline_inputs = {name: pipeline_input(inputs[name]) for name in needed}
    code_path = str(code)
    variables = dict(environment_variables or {})
    reusable = set(cacheable)
    nodes: dict[str, Any] = {}
    for step in chosen:
        step_inputs = {}
        for key, binding in step.inputs.items():
            if binding.source == PIPELINE_INPUT:
                step_inputs[key] = Input(type=pipeline_inputs[binding.name].type)
            else:
                step_inputs[key] = Input(type="uri_folder")
        step_outputs = {name: Output(type="uri_folder") for name in step.outputs}
        if step.kind == "command":
            component = command(
                name=step.name,
                display_name=step.name,
                description=step.description,
                code=code_path,
                environment=environment,
                command=step_command(step),
                inputs=step_inputs,
                outputs=step_outputs,
                compute=compute,
                environment_variables=dict(variables),
                is_deterministic=step.name in reusable,
            )
        elif step.kind == "parallel":
            data_input = mini_batch_input(step)
            component = parallel_run_function(
                name=step.name,
                display_name=step.name,
                description=step.description,
                inputs=step_inputs,
                outputs=step_outputs,
                input_data=f"${{{{inputs.{data_input}}}}}",
                instance_count=parallel.instance_count,
                max_concurrency_per_instance=parallel.max_concurrency_per_instance,
                mini_batch_size=str(parallel.mini_batch_size),
                error_threshold=parallel.error_threshold,
                mini_batch_error_threshold=parallel.mini_batch_error_threshold,
                retry_settings={"max_retries": parallel.retries, "timeout": parallel.timeout_s},
                logging_level=parallel.logging_level,
                compute=compute,
                # The step's module is passed on, so the entry script can check it trains what the spec says.
                environment_variables={**variables, "MLOPS_PARALLEL_STEP_MODULE": step.module},
                is_deterministic=step.name in reusable,
                task=RunFunction(
                    code=code_path,
                    entry_script=step.entry_script or PARALLEL_ENTRY_SCRIPT,
                    program_arguments=command_line(parallel_arguments(step)),
                    environment=parallel_environment or environment,
                ),
            )
        else:
            raise ValueError(f"step {step.name}: unknown kind {step.kind!r} (command or parallel)")
        bound = {}
        for key, binding in step.inputs.items():
            if binding.source == PIPELINE_INPUT:
                bound[key] = f"${{{{parent.inputs.{binding.name}}}}}"
            else:
                bound[key] = nodes[binding.source].outputs[binding.name]
        node = component(**bound)
        node.name = step.name
        nodes[step.name] = node
    return PipelineJob(
        display_name=spec.name if not steps else f"{spec.name} ({', '.join(s.name for s in chosen)})",
        description=spec.description,
        experiment_name=experiment_name,
        jobs=nodes,
        inputs=pipeline_inputs,
        compute=compute,
        settings={"default_compute": compute, "continue_on_step_failure": False},
        tags=dict(tags or {}),
    )


def validation_errors(job: Any) -> dict[str, str]:
    """The SDK's own offline schema checks; empty when the job passes."""
    result = job._validate()
    return {} if result.passed else dict(result.error_messages)
