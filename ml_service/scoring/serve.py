"""Run the scoring service on 127.0.0.1 (uvicorn).

    python -m ml_service.scoring.serve --package DIR [--port N] [--host 127.0.0.1] [--workers N]

``--package`` serves a build context written by ``ml_service.scoring.package`` (``DIR`` or ``DIR/package``);
without it, the registry's production models are downloaded and served (one process). The port defaults to
``SCORING_PORT``. Bind to 0.0.0.0 only inside a container (the packaged Dockerfile does). ``--workers N`` (with
``--package``; default ``SCORING_WORKERS``, 0 = one per available core) runs N processes, each with its own model
cache: scoring is CPU-bound, and one per core is what served best in ``bench/bench_scoring.py``. Each worker
listens on its own socket (SO_REUSEPORT; ``OwnSocketWorkers``), so the kernel spreads connections over them; a
port already in use, also by another of these services, is refused with one line. Workers die with the process
that started them (also after a ``kill -9`` of it), so a restart never finds the port still taken.

Connection limits (``ml_service.scoring.http_guard``): request line + headers ``SCORING_MAX_HEADER_BYTES``, a
request must arrive whole within ``SCORING_READ_TIMEOUT`` seconds, idle keep-alive connections close after 5 s,
at most ``SCORING_MAX_CONNECTIONS`` connections per worker (503 beyond).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from uvicorn.supervisors.multiprocess import Multiprocess

from ml_service.scoring.app import LOGGER_NAME, create_app
from ml_service.scoring.http_guard import GuardedHttpToolsProtocol
from ml_service.scoring.model_store import CatalogueError, ModelStore
from ml_service.util.env_variables import Settings, SettingsError, load_settings

PACKAGE_VARIABLE = "SCORING_PACKAGE_DIR"
PARENT_VARIABLE = "SCORING_PARENT_PID"
KEEP_ALIVE_SECONDS = 5
PR_SET_PDEATHSIG = 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ml_service.scoring.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, help="package folder (default: the registry's production models)")
    parser.add_argument("--port", type=int, help="port (default: SCORING_PORT, 5001)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument(
        "--workers", type=int, help="worker processes (default SCORING_WORKERS; 0 = one per core; >1 needs --package)"
    )
    return parser.parse_args(argv)


def die_with_parent(parent: int) -> None:
    """End this worker when ``parent`` (the process that started it) ends, however it ends.

    Linux: the kernel sends SIGTERM on the parent's death (PR_SET_PDEATHSIG); elsewhere a thread polls the parent
    id. Either way, a parent already gone before this ran is caught by comparing the parent id."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


# Linux spreads connections over sockets sharing a port with SO_REUSEPORT; other systems either lack the option
# (Windows) or hand every connection to one of the sockets (macOS): there the workers share uvicorn's one socket.
BALANCED_SOCKETS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart binds past TIME_WAIT
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def check_port_free(host: str, port: int) -> None:
    """Raise OSError if anything listens on ``host:port`` — also another of our services: the workers' sockets
    share the port with one another (SO_REUSEPORT), and would share it with an earlier service's just the same."""
    _socket(host, port, reuse_port=False).close()


class OwnSocketWorkers(Multiprocess):
    """uvicorn's worker supervisor (restarts, signals) with one listening socket per worker process.

    Why: with the one socket uvicorn shares between its workers, whichever worker wakes first accepts every
    connection waiting, so a burst of new connections lands on one worker: 32 wrk connections were split 32/0,
    31/1, 30/2, 18/14 between 2 workers (measured) — one worker on one core serving nearly all of them while the
    other idles. Each worker here listens on its own socket bound with SO_REUSEPORT: the kernel spreads new
    connections over the listening sockets by a hash of the client's address and port (balanced on average).
    Each process gets a new socket wherever uvicorn starts one (``self.sockets``); the supervisor closes its copy
    once the process has started, so a dead worker's socket closes with it and gets no more connections."""

    def __init__(self, config: Any):
        self._handed: list[socket.socket] = []
        super().__init__(config, [])

    @property  # type: ignore[override]
    def sockets(self) -> list[socket.socket]:
        sock = _socket(self.config.host, self.config.port, reuse_port=True)
        sock.set_inheritable(True)
        self._handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, value: list[socket.socket]) -> None:
        pass  # uvicorn's constructor assigns the shared sockets: there are none

    def _release(self) -> None:
        """Close the supervisor's copies of the sockets handed to processes started since the last call."""
        while self._handed:
            self._handed.pop().close()

    def init_processes(self) -> None:
        super().init_processes()
        self._release()

    def handle_signals(self) -> None:
        super().handle_signals()
        self._release()

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self._release()


def app_from_environment():
    """App factory for worker processes: each builds its own store from the package named in the environment."""
    parent = os.environ.get(PARENT_VARIABLE)
    if parent:
        die_with_parent(int(parent))
    settings = load_settings()
    setup_logging()
    GuardedHttpToolsProtocol.configure(settings.scoring_max_header_bytes, settings.scoring_read_timeout)
    store = ModelStore.from_package(Path(os.environ[PACKAGE_VARIABLE]), settings.scoring_cache_size)
    app = create_app(store, settings)
    tune_gc()
    return app


def tune_gc() -> None:
    """Call once a serving process has built its app. Everything loaded so far (pandas, scikit-learn, the
    catalogue: hundreds of thousands of objects) moves to the permanent generation, so Python's full collections,
    triggered by the allocations every request makes, no longer walk it; and young collections run less often (a
    request allocates thousands of short-lived objects, most freed by reference counting; the default threshold of
    700 ran a collection every few requests). Measured with wrk, 32 connections, one worker, a Ridge model:
    p99 124 ms -> 20 ms; /health p99 63 ms -> 10 ms."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests = logging.getLogger(LOGGER_NAME)
    requests.addHandler(handler)
    requests.propagate = False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def server_options(settings: Settings) -> dict:
    """uvicorn options shared by the one-process and the multi-worker runs."""
    return {
        "http": GuardedHttpToolsProtocol.configure(settings.scoring_max_header_bytes, settings.scoring_read_timeout),
        "limit_concurrency": settings.scoring_max_connections,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "log_level": "warning",
        "access_log": False,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings()
        if args.workers is None:
            args.workers = settings.scoring_worker_count if args.package else 1
        elif args.workers == 0:
            args.workers = settings.scoring_worker_count
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
    port = args.port or settings.scoring_port
    source = args.package or "the registry"
    print(
        f"serve: {len(store)} models from {source} catalogued in {time.perf_counter() - started:.2f} s; "
        f"{args.workers} worker(s); http://{args.host}:{port} (docs at /docs)",
        flush=True,
    )
    if args.workers > 1:
        os.environ[PACKAGE_VARIABLE] = str(args.package.resolve())
        os.environ[PARENT_VARIABLE] = str(os.getpid())
        try:
            check_port_free(args.host, port)
        except OSError as exc:
            print(f"serve: cannot listen on {args.host}:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        config = uvicorn.Config(
            "ml_service.scoring.serve:app_from_environment",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=port,
            **server_options(settings),
        )
        if BALANCED_SOCKETS:
            OwnSocketWorkers(config).run()
        else:  # uvicorn's one shared socket
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    app = create_app(store, settings)
    tune_gc()
    uvicorn.run(app, host=args.host, port=port, **server_options(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
