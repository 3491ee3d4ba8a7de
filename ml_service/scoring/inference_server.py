"""Start Azure ML's inference server (``azureml-inference-server-http``) on 127.0.0.1, for tests and benchmarks.

``azmlinfsrv`` always binds 0.0.0.0 (its ``DEFAULT_HOST``); this runs the same command-line entry point with
that host replaced by 127.0.0.1, so nothing listens beyond the loopback interface. Same flags as azmlinfsrv:

    python -m ml_service.scoring.inference_server --entry_script path/to/score.py --port 5002
"""

from __future__ import annotations

import sys

LOOPBACK = "127.0.0.1"


def main(argv: list[str] | None = None) -> None:
    from azureml_inference_server_http import amlserver

    amlserver.DEFAULT_HOST = LOOPBACK
    sys.argv = ["azmlinfsrv", *(sys.argv[1:] if argv is None else argv)]
    amlserver.run()


if __name__ == "__main__":
    main()
