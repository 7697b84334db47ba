"""What baseplate.py 2.x's ``baseplate-serve`` runs around the app, when
baseplate.py is importable (docs/migrating.md).

Its script and ``load_app_and_run_server`` run, in this order:

1. gevent's ``patch_all()``, ``patch_stdlib_queues()`` and psycogreen's
   ``patch_psycopg()`` (this server patches in gevent dispatch only);
2. ``configure_tracing()``: an OpenTelemetry ``TracerProvider`` and the
   Reddit B3 (THeader, HTTP) and W3C propagators;
3. ``ThreadingInstrumentor().instrument()``;
4. the Prometheus exporter (``0.0.0.0:6060/metrics``) when
   ``is_metrics_enabled(app_config)``;
5. ``LoggingInstrumentor().instrument()`` (its ``configure_logging``; the
   format itself is set up by ``_logging``);
6. the app, then the server factory, which calls
   ``runtime_monitor.start(server_config, app, pool)``;
7. ``gc.collect()`` before serving;
8. ``SERVER_STATE.state = SHUTTING_DOWN`` when a stop begins.

This module runs the same calls, with two differences: a missing
``PROMETHEUS_MULTIPROC_DIR`` is a warning and a private directory (baseplate.py
exits 1), and ``monitoring.blocked_hub`` is left to the core's own monitor.
Nothing here is imported without baseplate.py.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import shutil
import tempfile
import threading

from typing import Any, Callable, Dict, Optional

from baseplate_serve import _lifecycle
from baseplate_serve._errors import StartupError

logger = logging.getLogger("baseplate_serve")

#: Where the Prometheus exporter listens (baseplate.py: always 0.0.0.0:6060).
EXPORTER_VARIABLE = "BASEPLATE_SERVE_PROMETHEUS_ENDPOINT"
EXPORTER_DEFAULT = "0.0.0.0:6060"
#: Set to 0 to run none of baseplate.py's start-up even when it is importable.
SWITCH_VARIABLE = "BASEPLATE_SERVE_BASEPLATE_PY"


def detect() -> Optional[str]:
    """baseplate.py's version when a baseplate.py >= 2 is importable (not
    this package's ``baseplate.config`` shim), else None. Imports nothing of it."""
    if os.environ.get(SWITCH_VARIABLE, "1").strip() == "0":
        return None
    import importlib.util

    try:
        spec = importlib.util.find_spec("baseplate")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin == "baseplate-serve shim":
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("baseplate")
    except PackageNotFoundError:
        return None
    major = found.split(".", 1)[0]
    return found if major.isdigit() and int(major) >= 2 else None


class BaseplatePy:
    """baseplate.py's start-up hooks; see the module docstring for the order."""

    def __init__(self, version: str) -> None:
        self.version = version

    def before_app(self, app_config: Dict[str, str], dispatch: Optional[str]) -> None:
        """Steps 1 to 5 and 8, after this server's own gevent patching."""
        logger.info("baseplate.py %s is installed: running its start-up hooks (tracing, metrics, logging)", self.version)
        metrics = self._metrics_enabled(app_config)
        if metrics:
            _ensure_multiprocess_dir()
        if dispatch == "gevent":
            from baseplate.server.monkey import patch_stdlib_queues

            patch_stdlib_queues()
            try:
                import psycopg2  # noqa: F401
                from psycogreen.gevent import patch_psycopg
            except ImportError:
                pass
            else:
                patch_psycopg()

        from baseplate.server import configure_tracing

        configure_tracing()
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor

        ThreadingInstrumentor().instrument()
        if metrics:
            self._start_exporter()
        else:
            logger.info("Metrics are not configured, Prometheus metrics will not be exported.")
        from opentelemetry.instrumentation.logging import LoggingInstrumentor

        LoggingInstrumentor().instrument()

        from baseplate.server import SERVER_STATE, ServerLifecycle

        def shutting_down() -> None:
            SERVER_STATE.state = ServerLifecycle.SHUTTING_DOWN

        _lifecycle.on_stop(shutting_down)

    def after_app(
        self, server_config: Dict[str, str], app: Any, open_connections: Optional[Callable[[], int]]
    ) -> None:
        """Steps 6 (the runtime monitor, for the built-in server factories) and 7."""
        if open_connections is not None:
            from baseplate.server import runtime_monitor

            # monitoring.blocked_hub is the core's (it sees the hub from
            # outside); the other reporters are baseplate.py's own.
            config = {k: v for k, v in server_config.items() if k.strip() != "monitoring.blocked_hub"}
            runtime_monitor.start(config, app, _ConnectionPool(open_connections))
        gc.collect()  # clean up leftovers from initialization before requests, as baseplate.py does

    @staticmethod
    def _metrics_enabled(app_config: Dict[str, str]) -> bool:
        from baseplate.lib.prometheus_metrics import is_metrics_enabled

        return is_metrics_enabled(app_config)

    @staticmethod
    def _start_exporter() -> None:
        """baseplate.server.prometheus.start_prometheus_exporter(), with its
        export_metrics app, but a bind error is one clear line, and the
        exporter runs whatever the dispatch (a thread with its own hub, or
        a greenlet in gevent mode)."""
        from baseplate.lib.config import Endpoint
        from baseplate.server.net import bind_socket
        from baseplate.server.prometheus import METRICS_ENDPOINT, export_metrics, worker_id
        from gevent import socket as gevent_socket
        from gevent.pywsgi import LoggingLogAdapter, WSGIServer
        from prometheus_client import multiprocess, values
        from prometheus_client.values import MultiProcessValue

        values.ValueClass = MultiProcessValue(worker_id)
        atexit.register(multiprocess.mark_process_dead, worker_id())
        address = os.environ.get(EXPORTER_VARIABLE, "").strip() or EXPORTER_DEFAULT
        try:
            sock = bind_socket(Endpoint(address))
        except (OSError, ValueError) as exc:
            raise StartupError(f"Prometheus exporter: cannot listen on {address}: {exc}") from None
        family, kind, fileno = sock.family, sock.type, sock.detach()
        exporter_log = logging.getLogger("baseplate.server.prometheus")

        def serve() -> None:
            # The gevent socket and server are made on the thread that serves
            # them: their watchers belong to that thread's hub.
            server = WSGIServer(
                gevent_socket.socket(family, kind, fileno=fileno),
                application=export_metrics,
                log=LoggingLogAdapter(exporter_log, level=logging.DEBUG),
                error_log=LoggingLogAdapter(exporter_log, level=logging.ERROR),
            )
            server.serve_forever()

        threading.Thread(target=serve, name="prometheus-exporter", daemon=True).start()
        logger.info("Prometheus metrics exported on server listening on %s%s", address, METRICS_ENDPOINT)


class _ConnectionPool:
    """What the runtime monitor's concurrency reporter reads of gevent's
    ``Pool`` (``len(pool.greenlets)``): the core's open connections."""

    def __init__(self, open_connections: Callable[[], int]) -> None:
        self._open_connections = open_connections

    @property
    def greenlets(self) -> range:
        try:
            return range(self._open_connections())
        except Exception:  # the server is gone
            return range(0)


def _ensure_multiprocess_dir() -> None:
    """baseplate.py exits 1 at start when prometheus-client is installed and
    PROMETHEUS_MULTIPROC_DIR is unset. Here: a private directory, removed at
    exit, and a warning (several Einhorn workers need one shared directory)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="baseplate-serve-prometheus-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, True)
    logger.warning(
        "PROMETHEUS_MULTIPROC_DIR is not set: this process's metrics go to %s (removed at exit);"
        " set it to one writable directory shared by the workers",
        path,
    )
