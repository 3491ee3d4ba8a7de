"""Write a job as YAML that `az ml job create -f` and `azure.ai.ml.load_job` accept, and read it back.

`job.dump()` is not used as is: it writes a local path as `azureml:<absolute path>` (read back as a workspace
asset name), `code:` as an absolute path, and forecasting `time_series_id_column_names` as a string. The
job's own dictionary is taken and those are fixed: local paths become relative to the YAML file.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import yaml

_PATH_KEYS = ("path", "code")


def _local_path(value: str) -> Path | None:
    raw = value.removeprefix("azureml:")
    if raw.startswith(("/", "./", "../")) and Path(raw).exists():
        return Path(raw).resolve()
    return None


def _fix(node: Any, folder: Path) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _PATH_KEYS and isinstance(value, str) and (local := _local_path(value)) is not None:
                relative = os.path.relpath(local, folder)
                value = relative if relative.startswith("..") else f"./{relative}"
            elif key == "time_series_id_column_names" and isinstance(value, str) and value.startswith("["):
                value = ast.literal_eval(value)
            out[key] = _fix(value, folder)
        return out
    if isinstance(node, list):
        return [_fix(item, folder) for item in node]
    return node


def job_to_yaml_dict(job: Any, folder: Path) -> dict[str, Any]:
    """The job's dictionary with local paths relative to `folder` (where the YAML is written)."""
    plain = json.loads(json.dumps(job._to_dict()))  # OrderedDicts -> dicts
    return _fix(plain, folder.resolve())


def write_job_yaml(job: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = job_to_yaml_dict(job, path.parent)
    text = yaml.safe_dump(document, sort_keys=False, width=1000)
    path.write_text("# Written by ml_service.pipelines.azureml.run_pipeline --dry-run\n" + text, encoding="utf-8")
    return path


def load_back(path: Path):
    """Load the YAML with the SDK (its schema checks run while loading); raises on any problem."""
    from azure.ai.ml import load_job

    return load_job(source=str(path))
