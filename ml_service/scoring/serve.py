"""Run the scoring service on 127.0.0.1 (uvicorn).

    python -m ml_service.scoring.serve --package DIR [--port N] [--host 127.0.0.1] [--workers N]

``--package`` serves a build context written by ``ml_service.scoring.package`` (``DIR`` or ``DIR/package``);
without it, the registry's production models are downloaded and served. The port defaults to ``SCORING_PORT``.
Bind to 0.0.0.0 only inside a container (the packaged Dockerfile does). ``--workers N`` (with ``--package``) runs
N processes, each with its own model cache: scoring is CPU-bound, so one worker per core serves about N times
the requests.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ml_service.scoring.app import LOGGER_NAME, create_app
from ml_service.scoring.model_store import CatalogueError, ModelStore
from ml_service.util.env_variables import SettingsError, load_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml_service.scoring.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, help="package folder (default: the registry's production models)")
    parser.add_argument("--port", type=int, help="port (default: SCORING_PORT, 5001)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, help="worker processes (default SCORING_WORKERS, 1; >1 needs --package)")
    return parser.parse_args(argv)


PACKAGE_VARIABLE = "SCORING_PACKAGE_DIR"


def app_from_environment():
    """App factory for worker processes: each builds its own store from the package named in the environment."""
    import os

    settings = load_settings()
    setup_logging()
    store = ModelStore.from_package(Path(os.environ[PACKAGE_VARIABLE]), settings.scoring_cache_size)
    return create_app(store, settings)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests = logging.getLogger(LOGGER_NAME)
    requests.addHandler(handler)
    requests.propagate = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        if args.workers is None:
            args.workers = settings.scoring_workers
        if args.workers < 1 or (args.workers > 1 and not args.package):
            raise ValueError("--workers must be at least 1, and more than 1 needs --package")
        started = time.perf_counter()
        if args.package:
            store = ModelStore.from_package(args.package, settings.scoring_cache_size)
        else:
            store = ModelStore.from_registry(settings)
    except SettingsError as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    except (CatalogueError, OSError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    if len(store) == 0:
        print("serve: no model in production: train and register one first (make run)", file=sys.stderr)
        return 1
    import uvicorn

    setup_logging()
    app = create_app(store, settings)
    port = args.port or settings.scoring_port
    source = args.package or "the registry"
    print(
        f"serve: {len(store)} models from {source} catalogued in {time.perf_counter() - started:.2f} s; "
        f"http://{args.host}:{port} (docs at /docs)",
        flush=True,
    )
    if args.workers > 1:
        import os

        os.environ[PACKAGE_VARIABLE] = str(args.package.resolve())
        uvicorn.run(
            "ml_service.scoring.serve:app_from_environment",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=port,
            log_level="warning",
            access_log=False,
        )
        return 0
    uvicorn.run(app, host=args.host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
