"""Serves a Python app with the native core: the event loop of the main
thread (signals, native log records), the dispatch of requests to Python
(worker threads, or greenlets on the gevent hub) and graceful stop."""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time

from typing import Any, Callable, Dict, List, Optional, Tuple

from baseplate_serve import _core, _lifecycle
from baseplate_serve._errors import AppError, ConfigError
from baseplate_serve._file_wrapper import FileWrapper
from baseplate_serve._listener import describe
from baseplate_serve._logging import emit_native
from baseplate_serve._options import parse_server_options
from baseplate_serve._stackdump import dump_stacks

logger = logging.getLogger("baseplate_serve")

#: How long the main thread waits for the workers once the network is done.
_WORKER_JOIN_TIMEOUT = 5.0
#: How often the hub checks whether a graceful stop has drained (gevent mode).
_DRAIN_POLL = 0.05


class NativeServer:
    """A native-core server for one app (``protocol``: "wsgi" for a WSGI
    callable, "thrift" for a TProcessor; ``dispatch``: "gevent" or "threads").
    ``serve_forever()`` blocks until a SIGTERM, SIGINT or SIGUSR2, then stops
    gracefully."""

    def __init__(
        self,
        server_config: Dict[str, str],
        listener: socket.socket,
        app: Any,
        *,
        protocol: str,
        dispatch: str,
        filename: str,
        section: str,
        native: Optional[Tuple[str, str, Dict[str, str], str]] = None,
    ) -> None:
        options = parse_server_options(server_config, filename, section)
        self._python_threads: int = 0 if native else options.python_threads
        self._drain_time: float = options.drain_time
        self._stop_timeout: float = options.stop_timeout
        self._dispatch = dispatch
        self._core = _core.Server(options.core, protocol, dispatch)
        self._core.set_log_level(logging.getLogger().getEffectiveLevel())
        if native:
            self._load_native(native, protocol, filename, section)
        elif protocol == "thrift":
            self._core.set_thrift_processor(app)
        else:
            name, port = _server_name_port(listener)
            self._core.set_wsgi_app(app, FileWrapper, name, port)
        self._core.adopt_listener(listener.fileno())
        # The core holds its own copy; closing this one now means the socket
        # closes, and new connections are refused, the moment the core stops
        # accepting. (An Einhorn listener stays open in the other workers.)
        self._address = describe(listener)
        listener.close()
        self._workers: List[threading.Thread] = []

    def _load_native(
        self, native: Tuple[str, str, Dict[str, str], str], protocol: str, filename: str, section: str
    ) -> None:
        path, factory, app_config, app_section = native
        where = f"{filename}: [{app_section}] factory"
        try:
            kind = self._core.set_native_app(path, factory, app_config)
        except _core.PluginLookupError as exc:  # no such factory: exit 2, as for a Python factory
            raise ConfigError(f"{where}: {exc}") from None
        except _core.PluginError as exc:
            raise AppError(f"{where}: {exc}") from None
        finally:
            emit_native(self._core.events(0)[2])  # what the factory logged
        if kind != ("thrift" if protocol == "thrift" else "http"):
            wanted = "a Thrift processor" if protocol == "thrift" else "an HTTP handler"
            raise AppError(
                f"{where}: {path}:{factory} returned {'a Thrift processor' if kind == 'thrift' else 'an HTTP handler'},"
                f" but [{section}] factory = baseplate.server.{protocol} needs {wanted}"
            )
        logger.info(
            "Native app %s:%s serves %s requests without Python", path, factory, "Thrift" if kind == "thrift" else "HTTP"
        )

    def serve_forever(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Serves until a stop signal, then drains and returns. ``on_ready``
        runs once the server accepts (the Einhorn ACK)."""
        self._core.start()
        if self._dispatch == "gevent":
            self._serve_gevent(on_ready)
        else:
            self._serve_threads(on_ready)
        _ignore_stop_signals()  # the core has handed the signals back
        _stop, _dump, records = self._core.events(0)
        emit_native(records)
        logger.info("Stopped")

    # -- threads mode: the main thread blocks in the core, GIL released

    def _serve_threads(self, on_ready: Optional[Callable[[], None]]) -> None:
        for i in range(self._python_threads):
            worker = threading.Thread(target=self._core.run_worker, name=f"baseplate-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._ready(on_ready)
        stop_signal = self._wait_for_stop()
        self._stopping(stop_signal)
        if self._drain_time > 0:
            self._wait_for_stop(deadline=time.monotonic() + self._drain_time)
        self._report_forced(self._core.stop())
        self._core.close_queue()
        for worker in self._workers:
            worker.join(_WORKER_JOIN_TIMEOUT)
        self._core.join()

    def _wait_for_stop(self, deadline: Optional[float] = None) -> int:
        """Handles events until a stop signal, or until ``deadline`` (then
        stop signals are ignored: a drain runs to its end). Returns the signal."""
        # The core owns SIGTERM/SIGINT/SIGUSR2/SIGUSR1 while serving and wakes
        # this thread for them and for native log records.
        while True:
            timeout_ms = 1000
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 0
                timeout_ms = max(1, min(timeout_ms, int(remaining * 1000)))
            stop_signal = self._handle_events(self._core.events(timeout_ms))
            if stop_signal and deadline is None:
                return stop_signal

    # -- gevent mode: the hub runs on the main thread

    def _serve_gevent(self, on_ready: Optional[Callable[[], None]]) -> None:
        import gevent
        import gevent.event

        hub = gevent.get_hub()
        stopped = gevent.event.AsyncResult()

        def on_events() -> None:
            stop_signal = self._handle_events(self._core.events(0))
            if stop_signal and not stopped.ready():
                stopped.set(stop_signal)

        start = _worker_greenlets(hub, self._core.ready_runner())
        queue_watcher = hub.loop.io(self._core.queue_fd, 1)
        queue_watcher.start(self._core.drain, start)
        event_watcher = hub.loop.io(self._core.event_fd, 1)
        event_watcher.start(on_events)
        # The first drain arms the queue's wake-up. It runs on the hub, like
        # every later one: requests may already be queued, and a worker
        # greenlet that finishes one switches to the hub, never back here,
        # so a drain run from this greenlet would leave it suspended for
        # good (no "Listening", stop signals unheeded).
        hub.loop.run_callback(self._core.drain, start)
        try:
            self._ready(on_ready)
            self._stopping(stopped.get())
            if self._drain_time > 0:
                gevent.sleep(self._drain_time)
            self._core.begin_stop()
            deadline = time.monotonic() + self._stop_timeout
            while self._core.stats()["open_connections"] and time.monotonic() < deadline:
                gevent.sleep(_DRAIN_POLL)
            self._report_forced(self._core.force_close())
            gevent.sleep(0)  # let aborted greenlets see their errors
        finally:
            queue_watcher.stop()
            event_watcher.stop()
            self._core.close_queue()
            self._core.join()

    # -- shared

    def _ready(self, on_ready: Optional[Callable[[], None]]) -> None:
        if self._python_threads or self._dispatch == "gevent":
            logger.info(
                "Python requests run on %s", "the gevent hub" if self._dispatch == "gevent" else "worker threads"
            )
        logger.info("Listening on %s", self._address)
        if on_ready is not None:
            on_ready()

    def _handle_events(self, events: Tuple[int, bool, list]) -> int:
        stop_signal, dump, records = events
        emit_native(records)
        if dump:
            dump_stacks(self._core.stats())
        return stop_signal

    def _stopping(self, stop_signal: int) -> None:
        logger.info("Received %s, stopping gracefully", signal.Signals(stop_signal).name)
        _ignore_stop_signals()
        _lifecycle.notify_stop()
        if self._drain_time > 0:
            # Keep serving so load balancers notice before the listener goes.
            logger.info("Draining for %.3g s before stopping", self._drain_time)

    @staticmethod
    def _report_forced(forced: int) -> None:
        if forced:
            logger.warning("stop_timeout reached: closed %d connection(s) with requests in flight", forced)


def _worker_greenlets(hub: Any, run_ready: Callable[[], None]) -> Callable[[], None]:
    """Returns ``start()``, which the hub calls while requests are ready:
    it switches to a worker greenlet (whose parent is the hub), which serves
    ready requests with ``run_ready()`` until none are left or one waits,
    then switches back to the hub.

    Workers are reused: a new greenlet costs Python 3.11 a fresh frame
    stack (an mmap and page faults), several times the rest of a hello-world
    request. Each request runs in a fresh contextvars.Context, so context
    variables never carry over; a worker serves one request at a time, so
    concurrent requests never share a greenlet (gevent.local values may
    carry over to a later request on the same worker, as they do between
    the requests of one keep-alive connection under gevent's pywsgi)."""
    from greenlet import getcurrent, greenlet

    idle: List[Any] = []

    def work() -> None:
        me = getcurrent()
        while True:
            run_ready()
            idle.append(me)
            hub.switch()  # parked until start() needs a worker again

    def start() -> None:
        if idle:
            idle.pop().switch()
        else:
            greenlet(work, hub).switch()

    return start


def _ignore_stop_signals() -> None:
    """A second stop signal (a supervisor repeating itself) must not kill
    the process while it stops. SIG_IGN rather than a Python handler: the
    interpreter resets Python handlers to the default action as it exits."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def _server_name_port(listener: socket.socket) -> Tuple[str, str]:
    name = listener.getsockname()
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        return str(name[0]), str(name[1])
    return "localhost", ""
