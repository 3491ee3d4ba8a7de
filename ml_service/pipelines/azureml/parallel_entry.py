"""Entry script of the Azure ML parallel job that trains many models: `init()` once per process, then
`run(mini_batch)` per mini-batch of files of the prepared folder.

It receives the same arguments as the local train step (`--prepared` from `StepSpec.arguments`; the output
folder as `--mlops-output`, because the parallel driver parses its own `--output` from the same command line,
see builder.parallel_arguments) and trains the mini-batch's models with the local step's own function,
`ml_service.pipelines.training.train_batch` (the use cases come from the plan and the project's declaration),
so a model trained here is the model trained locally.

Files of the mini-batch that are not a planned model (the plan itself, anything else in the folder) are
acknowledged and skipped. A model whose training fails is logged and *left out* of run()'s result: Azure ML
counts it against the job's `error_threshold`, as the local step counts failures against its threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[3]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))  # the code snapshot's root: ml_service and the use cases import from it

_state: dict[str, Any] = {}


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    # No abbreviations: the driver's own options must never be read as a prefix of ours.
    parser = argparse.ArgumentParser(description="Azure ML parallel job entry: train many models", allow_abbrev=False)
    parser.add_argument("--prepared", type=Path, required=True, help="input: the prepared folder (with the plan)")
    parser.add_argument("--mlops-output", dest="output", type=Path, required=True, help="output: trained models")
    # Azure ML adds its own arguments (mini-batch size, logging, ...): ignore what is not ours.
    args, _unknown = parser.parse_known_args(argv)
    return args


def init(argv: list[str] | None = None) -> None:
    """Read the plan once per worker process: prepared file (relative path) -> its training task."""
    from ml_service.pipelines.training import read_plan

    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    prepared = args.prepared.resolve()
    _state.clear()
    _state.update(
        prepared=prepared,
        output=args.output.resolve(),
        root=_REPO,
        tasks={task.data_file: task for task in read_plan(prepared)},
    )
    print(f"parallel_entry: {len(_state['tasks'])} planned model(s) in {prepared}", flush=True)


def planned_items(mini_batch: list[str], folder: Path, planned: dict[str, Any], unplanned: str):
    """The mini-batch's files that are planned tasks (by their path relative to `folder`), and one acknowledgement
    line for each of the others (the plan itself, anything else Azure ML hands over)."""
    done: list[str] = []
    tasks = []
    for item in mini_batch:
        path = Path(item).resolve()
        try:
            relative = path.relative_to(folder).as_posix()
        except ValueError:
            relative = path.name
        task = planned.get(relative)
        if task is None:
            done.append(json.dumps({"file": relative, "status": unplanned}))
        else:
            tasks.append(task)
    return done, tasks


def run(mini_batch: list[str]) -> list[str]:
    """Train the models of the mini-batch; one JSON line per processed file (failures are left out)."""
    from ml_service.pipelines.training import train_batch

    done, tasks = planned_items(mini_batch, _state["prepared"], _state["tasks"], "not a planned model")
    # the local step's batch function: partitions on the ridge fast path train together, each failure is its own
    for result in train_batch(tasks, _state["prepared"], _state["output"], _state["root"]):
        if result.status == "failed":
            print(f"parallel_entry: FAILED {result.model_id}: {result.error}", file=sys.stderr)
            continue
        done.append(json.dumps(asdict(result)))
    return done
