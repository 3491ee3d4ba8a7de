"""Entry script of the Azure ML parallel job that batch-scores: `init()` once per process, then `run(mini_batch)`
per mini-batch of files of the plan stage's partitions folder (one CSV per partition).

It receives the local step's own arguments (`--stage score --partitions P --models M`, the output folder as
`--mlops-output`: the parallel driver parses its own `--output`, see builder.parallel_arguments) and scores
each partition with the local step's function, `ml_service.pipelines.batch.score_batch`: a prediction written
here is the one written locally, one batch file per mini-batch (a retried mini-batch rewrites its own file).
Files that are not a planned partition (the plan itself) are acknowledged and skipped; a partition that fails
is logged and left out of the result, so Azure ML counts it against the job's error_threshold, as the local
step counts it against the use case's.
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
    parser = argparse.ArgumentParser(description="Azure ML parallel job entry: batch scoring", allow_abbrev=False)
    parser.add_argument("--partitions", type=Path, required=True, help="input: the new rows per partition (plan)")
    parser.add_argument("--models", type=Path, required=True, help="input: the downloaded model data folders")
    parser.add_argument("--mlops-output", dest="output", type=Path, required=True, help="output: predictions")
    args, _unknown = parser.parse_known_args(argv)  # the driver's own arguments and --stage
    return args


def init(argv: list[str] | None = None) -> None:
    from ml_service.pipelines.batch import BatchPlan

    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    partitions = args.partitions.resolve()
    plan = BatchPlan.read(partitions)
    _state.clear()
    _state.update(
        partitions=partitions,
        models=args.models.resolve(),
        output=args.output.resolve(),
        root=_REPO,
        tasks={task.data_file: task for task in plan.tasks},
    )
    print(f"batch_parallel_entry: {len(plan.tasks)} planned partition(s) in {partitions}", flush=True)


def run(mini_batch: list[str]) -> list[str]:
    from ml_service.pipelines.azureml.parallel_entry import planned_items
    from ml_service.pipelines.batch import score_batch

    done, tasks = planned_items(mini_batch, _state["partitions"], _state["tasks"], "not a planned partition")
    for result in score_batch(tasks, _state["partitions"], _state["models"], _state["output"], _state["root"]):
        if result.status == "failed":
            print(f"batch_parallel_entry: FAILED {result.use_case} {result.key}: {result.error}", file=sys.stderr)
            continue
        done.append(json.dumps(asdict(result)))
    return done
