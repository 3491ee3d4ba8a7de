"""Step: check the raw data against the use case's schema and keep the modelled columns."""

from __future__ import annotations

import sys

from ml_service.pipelines.steps.common import load_use_case, run_step, step_parser
from ml_service.util.data_checks import schema_from_dict, validate_csv
from ml_service.util.files import file_sha256, write_atomic, write_json

PREPARED_FILE = "prepared.csv"
LINEAGE_FILE = "lineage.json"


def main(argv: list[str] | None = None) -> int:
    args = step_parser(__doc__, inputs=["raw_data"]).parse_args(argv)

    def body() -> None:
        use_case = load_use_case(args.use_case)
        params = use_case.load_parameters()
        schema = schema_from_dict(params.schema)
        frame = validate_csv(args.raw_data, schema)
        prepared = use_case.train.prepare_data(frame, schema.column_names)
        write_atomic(args.output / PREPARED_FILE, prepared.to_csv(index=False).encode())
        data_hash = file_sha256(args.raw_data)
        write_json(
            args.output / LINEAGE_FILE,
            {"data_file": str(args.raw_data), "data_hash": data_hash, "rows": len(prepared)},
        )
        shape = f"{len(prepared)} rows x {prepared.shape[1]} columns"
        print(f"prepare: {shape} from {args.raw_data} (sha256 {data_hash[:12]})")

    return run_step("prepare", body)


if __name__ == "__main__":
    sys.exit(main())
