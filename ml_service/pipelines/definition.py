"""One definition of each training pipeline: steps, their commands, inputs, outputs and parameters.

The local runner executes it as processes; the Azure ML builder renders the same steps as command jobs. A step
is only a `python -m` module plus named inputs and outputs, so nothing here assumes where it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

PIPELINE_INPUT = "pipeline"


@dataclass(frozen=True)
class Binding:
    """Where a step input comes from: a pipeline input, or an output of an earlier step."""

    source: str  # PIPELINE_INPUT or a step name
    name: str

    def __str__(self) -> str:
        return f"{self.source}.{self.name}"


@dataclass(frozen=True)
class StepSpec:
    name: str
    module: str
    description: str
    inputs: Mapping[str, Binding] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("output",)
    parameters: Mapping[str, str] = field(default_factory=dict)
    kind: str = "command"  # "command", or "parallel" for many-model training

    def arguments(self, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> list[str]:
        """Command-line arguments, given a value (a path, or a placeholder such as ${{inputs.x}}) per name."""
        args: list[str] = []
        for key, value in self.parameters.items():
            args += [f"--{key.replace('_', '-')}", value]
        for key in self.inputs:
            args += [f"--{key.replace('_', '-')}", inputs[key]]
        for key in self.outputs:
            args += [f"--{key.replace('_', '-')}", outputs[key]]
        return args


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    inputs: Mapping[str, str]  # name -> default value (a path relative to the project root)
    steps: tuple[StepSpec, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for step in self.steps:
            for key, binding in step.inputs.items():
                known = binding.source == PIPELINE_INPUT and binding.name in self.inputs
                earlier = binding.source in seen and binding.name in self.step(binding.source).outputs
                if not (known or earlier):
                    raise ValueError(f"pipeline {self.name}: step {step.name} input {key} <- {binding}: no such output")
            seen.add(step.name)

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"pipeline {self.name} has no step {name!r}")


def single_model_training(use_case: str, raw_data: str) -> PipelineSpec:
    """prepare → train → evaluate → register for one model of a use case."""
    common = {"use_case": use_case}
    prepare = StepSpec(
        "prepare",
        "ml_service.pipelines.steps.prepare",
        "check the raw data and keep the modelled columns",
        inputs={"raw_data": Binding(PIPELINE_INPUT, "raw_data")},
        parameters=common,
    )
    train = StepSpec(
        "train",
        "ml_service.pipelines.steps.train",
        "fit the model, log params, metrics and the model",
        inputs={"prepared": Binding("prepare", "output")},
        parameters=common,
    )
    evaluate = StepSpec(
        "evaluate",
        "ml_service.pipelines.steps.evaluate",
        "compare with the model in production",
        inputs={"trained": Binding("train", "output")},
        parameters=common,
    )
    register = StepSpec(
        "register",
        "ml_service.pipelines.steps.register",
        "register the model and move the production alias",
        inputs={"trained": Binding("train", "output"), "decision": Binding("evaluate", "output")},
        parameters=common,
    )
    return PipelineSpec(
        f"{use_case}-training",
        f"Train, evaluate and register the {use_case} model",
        {"raw_data": raw_data},
        (prepare, train, evaluate, register),
    )


def many_models_training(group: str, config: str) -> PipelineSpec:
    """prepare → train (parallel, a model per partition) → evaluate → register, for each use case in `config`.

    `config` is a pipeline input (a file), so the cloud job receives it like any other data.
    """
    cfg = {"config": Binding(PIPELINE_INPUT, "config")}
    prepare = StepSpec(
        "prepare",
        "ml_service.pipelines.steps.ff_prepare",
        "materialise, check and partition the raw data",
        inputs=cfg,
    )
    train = StepSpec(
        "train",
        "ml_service.pipelines.steps.ff_train",
        "train every model in parallel (resumable)",
        inputs={**cfg, "prepared": Binding("prepare", "output")},
        kind="parallel",
    )
    evaluate = StepSpec(
        "evaluate",
        "ml_service.pipelines.steps.ff_evaluate",
        "compare each model with its production version",
        inputs={**cfg, "trained": Binding("train", "output")},
    )
    register = StepSpec(
        "register",
        "ml_service.pipelines.steps.ff_register",
        "register promoted models and model sets; report",
        inputs={**cfg, "trained": Binding("train", "output"), "decisions": Binding("evaluate", "output")},
    )
    return PipelineSpec(
        f"{group}-training",
        f"Train, evaluate and register every {group} model",
        {"config": config},
        (prepare, train, evaluate, register),
    )
