"""Which pipeline definition serves which use case."""

from __future__ import annotations

from ml_service.pipelines.definition import PipelineSpec, single_model_training
from ml_service.pipelines.steps.common import load_use_case


def training_pipeline(use_case: str) -> PipelineSpec:
    params = load_use_case(use_case).load_parameters()
    return single_model_training(use_case, params.raw_file)
