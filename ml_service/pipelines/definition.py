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
    entry_script: str = ""  # a parallel step's Azure ML entry script (default: the training one)

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


def training_pipeline(use_cases: list[str], name: str | None = None, retrain_from: str = "") -> PipelineSpec:
    """prepare → train (parallel: a model per partition, every use case's models in one fan-out) → evaluate →
    register, for the given declared use cases. A single model is a use case with one partition. `retrain_from`:
    the monitor step's retrain.json; only the models it selects are trained (register keeps the others)."""
    parameters = {"use_case": ",".join(use_cases)}
    if retrain_from:
        parameters["retrain_from"] = retrain_from
    prepare = StepSpec(
        "prepare",
        "ml_service.pipelines.steps.prepare",
        "materialise, check and partition the raw data; plan one model per partition",
        parameters=parameters,
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


BATCH_SCORE_MODULE = "ml_service.pipelines.steps.batch_score"


def batch_scoring_pipeline(use_cases: list[str], name: str | None = None) -> PipelineSpec:
    """plan (download the production models, split the new rows per partition) → score (parallel: one
    partition's rows and model at a time) → combine (one Parquet per use case, the summary): the stages of the
    local batch-score step, run apart. The new rows are the pipeline input `new_data`."""
    plan = StepSpec(
        "plan",
        BATCH_SCORE_MODULE,
        "download the production models and split the new rows into one file per partition",
        inputs={"input": Binding(PIPELINE_INPUT, "new_data")},
        outputs=("partitions", "models"),
        parameters={"stage": "plan", "use_case": ",".join(use_cases)},
    )
    score = StepSpec(
        "score",
        BATCH_SCORE_MODULE,
        "score every partition with its production model in parallel (resumable)",
        inputs={"partitions": Binding("plan", "partitions"), "models": Binding("plan", "models")},
        parameters={"stage": "score"},
        kind="parallel",
        entry_script="ml_service/pipelines/azureml/batch_parallel_entry.py",
    )
    combine = StepSpec(
        "combine",
        BATCH_SCORE_MODULE,
        "one Parquet file of predictions per use case, and the summary",
        inputs={"partitions": Binding("plan", "partitions"), "scored": Binding("score", "output")},
        parameters={"stage": "combine"},
    )
    label = name or (use_cases[0] if len(use_cases) == 1 else "use-cases")
    return PipelineSpec(
        f"{label}-batch-scoring",
        f"Batch-score {', '.join(use_cases)} with their production models",
        {"new_data": "local/batch/input"},  # run_pipeline: <LOCAL_DIR>/batch/input
        (plan, score, combine),
    )
