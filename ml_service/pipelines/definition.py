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


def training_pipeline(use_cases: list[str], name: str | None = None) -> PipelineSpec:
    """prepare → train (parallel: a model per partition, every use case's models in one fan-out) → evaluate →
    register, for the given declared use cases. A single model is a use case with one partition."""
    prepare = StepSpec(
        "prepare",
        "ml_service.pipelines.steps.prepare",
        "materialise, check and partition the raw data; plan one model per partition",
        parameters={"use_case": ",".join(use_cases)},
    )
    train = StepSpec(
        "train",
        "ml_service.pipelines.steps.train",
        "train every model in parallel (resumable)",
        inputs={"prepared": Binding("prepare", "output")},
        kind="parallel",
    )
    evaluate = StepSpec(
        "evaluate",
        "ml_service.pipelines.steps.evaluate",
        "compare each model with its production version",
        inputs={"trained": Binding("train", "output")},
    )
    register = StepSpec(
        "register",
        "ml_service.pipelines.steps.register",
        "register promoted models as MLflow models; write the report",
        inputs={"trained": Binding("train", "output"), "decisions": Binding("evaluate", "output")},
    )
    label = name or (use_cases[0] if len(use_cases) == 1 else "use-cases")
    return PipelineSpec(
        f"{label}-training",
        f"Train, evaluate and register {', '.join(use_cases)}",
        {},
        (prepare, train, evaluate, register),
    )
