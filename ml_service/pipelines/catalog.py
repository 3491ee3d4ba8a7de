"""Which pipeline definition serves which use case.

A single-model use case (the diabetes_regression sample and any package shaped like it) gets the
prepare → train → evaluate → register pipeline. A many-models group (`ff`) gets its own definition, named
here by module so that nothing of it is imported unless it is asked for.
"""

from __future__ import annotations

import importlib

from ml_service.pipelines.definition import PipelineSpec, single_model_training
from ml_service.pipelines.steps.common import load_use_case

MANY_MODELS_PIPELINES = {
    "ff": "ml_service.pipelines.definition:many_models_training",
}
MANY_MODELS_CONFIGS = {
    "ff": "ff/pipeline_config.json",
}


def is_many_models(use_case: str) -> bool:
    return use_case in MANY_MODELS_PIPELINES


def training_pipeline(use_case: str) -> PipelineSpec:
    if is_many_models(use_case):
        module, function = MANY_MODELS_PIPELINES[use_case].split(":")
        return getattr(importlib.import_module(module), function)(use_case, MANY_MODELS_CONFIGS[use_case])
    params = load_use_case(use_case).load_parameters()
    return single_model_training(use_case, params.raw_file)
