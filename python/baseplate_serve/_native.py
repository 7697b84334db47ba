"""Serves an app with the native core: the main thread's loop (signals,
native log records) for each dispatcher (worker threads, or greenlets on
the gevent hub), and the graceful stop (_stop.py)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from typing import Any, Callable, Dict, List, Optional, Tuple

from baseplate_serve import _core
from baseplate_serve._errors import AppError, ConfigError
from baseplate_serve._file_wrapper import FileWrapper
from baseplate_serve._listener import describe
from baseplate_serve._logging import emit_native
from baseplate_serve._monitor import start_blocked_hub_monitor
from baseplate_serve._options import parse_server_options
from baseplate_serve._stackdump import dump_stacks, start_os_thread, use_native_handler_locks
from baseplate_serve._stop import STOP_SIGNALS, GracefulStop, deadline_line, deadline_seconds

logger = logging.getLogger("baseplate_serve")

#: Once the stop has closed what was left, how long the workers get to
#: notice (all of them together, not each).
_WORKER_GRACE = 0.3


class NativeServer:
    """A native-core server for one app (``protocol``: "wsgi" for a WSGI
    callable, "thrift" for a TProcessor; ``dispatch``: "gevent" or "threads").
    ``serve_forever()`` blocks until a SIGTERM, SIGINT, SIGUSR2 or SIGHUP,
    then stops gracefully."""

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
        inline_capable = dispatch == "gevent" and not native
        if "io_threads" not in server_config:
            # The default: inline I/O where it can run (one core per process
            # and no request crossing a thread; bench/RESULTS.md), else one
            # I/O thread. The core's own default stays 1 for native hosts.
            options.values["io_threads"] = 0 if inline_capable else 1
        elif options.values["io_threads"] == 0 and not inline_capable:
            # Inline I/O needs the gevent hub to run the loop: a native app
            # has no Python thread, and threads dispatch keeps its I/O
            # thread (a worker blocked in the app would stall every
            # connection; see docs/architecture.md). Not an error: one INI
            # may serve either way.
            logger.info(
                "io_threads = 0 (inline I/O) needs gevent dispatch and a Python app; %s uses 1 I/O thread",
                "this native app" if native else "threads dispatch",
            )
            options.values["io_threads"] = 1
        self._python_threads: int = 0 if native else options.python_threads
        self._drain_time: float = options.drain_time
        self._stop_timeout: float = options.stop_timeout
        self._dispatch = dispatch
        self._blocked_hub = options.blocked_hub if dispatch == "gevent" else 0.0
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

    def _load_native(
        self, native: Tuple[str, str, Dict[str, str], str], protocol: str, filename: str, section: str
    ) -> None:
        path, factory, app_config, app_section = native
        where = f"{filename}: [{app_section}] factory"
        try:
            kind = self._core.set_native_app(path, factory, app_config)
        except _core.NativeAppLookupError as exc:  # no such factory: exit 2, as for a Python factory
            raise ConfigError(f"{where}: {exc}") from None
        except _core.NativeAppError as exc:
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
        """Serves until a stop signal, then runs the stop sequence (_stop.py)
        and returns. ``on_ready`` runs once the server accepts (the Einhorn ACK)."""
        seconds = deadline_seconds(self._drain_time, self._stop_timeout)
        # Armed by the core on its own thread when the signal arrives: the
        # stop is bounded even while a request keeps the main thread.
        self._core.arm_deadline_on_stop(seconds, deadline_line(seconds))
        self._core.start()
        loop: Any
        if self._dispatch != "gevent":
            loop = _ThreadsLoop(self)
        elif self._core.dispatcher is not None and self._core.dispatcher.name == "inline":
            loop = _InlineLoop(self)
        else:
            loop = _GeventLoop(self)
        hung = loop.serve(on_ready)
        _ignore_stop_signals()  # the core has handed the signals back
        _stop, _dump, records = self._core.events(0)
        emit_native(records)
        logger.info("Stopped")
        if hung:
            # Workers still inside the app past the stop: the interpreter
            # could not finalize under them. Leave now, with status 0.
            logging.shutdown()
            os._exit(0)

    # -- shared by the loops

    def _ready(self, on_ready: Optional[Callable[[], None]]) -> None:
        dispatcher = self._core.dispatcher
        if dispatcher is not None and dispatcher.name == "inline":
            logger.info("Python requests run on the gevent hub, and so does the network I/O (io_threads = 0)")
        elif self._python_threads or self._dispatch == "gevent":
            logger.info(
                "Python requests run on %s", "the gevent hub" if self._dispatch == "gevent" else "worker threads"
            )
        logger.info("Listening on %s", self._address)
        if on_ready is not None:
            on_ready()

    def _handle_events(self, events: Tuple[int, bool, list], stop: GracefulStop) -> None:
        stop_signal, dump, records = events
        emit_native(records)
        if dump:
            dump_stacks(self._core.stats())
        if stop_signal:
            stop.signal(stop_signal)
        stop.wake()  # maybe the last connection of a stop closed

    def _graceful_stop(self, **kwargs: Any) -> GracefulStop:
        core = self._core
        return GracefulStop(
            self._drain_time,
            self._stop_timeout,
            stop_accepting=core.begin_stop,
            in_flight=lambda: core.stats()["open_connections"],
            close_remaining=core.force_close,
            **kwargs,
        )


class _ThreadsLoop:
    """threads dispatch (and native apps): worker threads run the Python
    requests; the main thread blocks in the core, GIL released, until an
    event: a signal, a native log record, the last connection of a stop
    closing."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.core = server._core
        self.stop = server._graceful_stop(wait=self.wait)
        self.workers: List[threading.Thread] = []

    def wait(self, seconds: float) -> None:
        self.server._handle_events(self.core.events(max(1, int(seconds * 1000))), self.stop)

    def serve(self, on_ready: Optional[Callable[[], None]]) -> int:
        dispatcher = self.core.dispatcher
        if dispatcher is not None:
            for i in range(self.server._python_threads):
                worker = threading.Thread(target=dispatcher.run_worker, name=f"baseplate-worker-{i}", daemon=True)
                worker.start()
                self.workers.append(worker)
        self.server._ready(on_ready)
        while not self.stop.requested:
            self.wait(1.0)
        self.stop.run()
        self.core.close_dispatch()
        hung = self._join_workers()
        self.core.join()
        return hung

    def _join_workers(self) -> int:
        """Joins the workers against one deadline, never a timeout each."""
        deadline = time.monotonic() + _WORKER_GRACE
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        hung = sum(1 for worker in self.workers if worker.is_alive())
        if hung:
            logger.warning("%d worker thread(s) still running a request after the stop; exiting without them", hung)
        return hung


class _GeventLoop:
    """gevent dispatch: requests run in greenlets on the hub (the main
    thread), which watches the core's event fd and the dispatcher's queue
    fd. What must not wait for the hub does not: the core arms the stop's
    deadline on its own thread, an OS thread answers SIGUSR1 and logs the
    stop signal, and a monitor thread warns when the hub is blocked."""

    def __init__(self, server: NativeServer) -> None:
        import gevent.event

        self.server = server
        self.core = server._core
        self.stop = server._graceful_stop(event=gevent.event.Event())

    def serve(self, on_ready: Optional[Callable[[], None]]) -> int:
        import gevent

        hub = gevent.get_hub()
        dispatcher = self.core.dispatcher
        start = _worker_greenlets(hub, dispatcher.ready_runner())
        watcher = self._watch_dispatcher(hub, dispatcher, start)
        # Events are handled in a greenlet, never in a hub callback: logging
        # may wait for a handler's lock that another OS thread holds (the
        # signal or monitor thread), and a hub callback cannot wait.
        events = gevent.spawn(self._handle_events_forever)
        use_native_handler_locks()  # before any OS thread logs
        signals = _SignalThread(self.core, self.stop)
        threshold = self.server._blocked_hub
        monitor = start_blocked_hub_monitor(threshold) if threshold > 0 else None
        try:
            self.server._ready(on_ready)
            self.stop.wait_for_signal()
            self.stop.run()
            self._after_stop()
            gevent.sleep(0)  # let aborted greenlets see their errors
        finally:
            if monitor is not None:
                monitor.stop()
            watcher.stop()
            events.kill(block=False)
            self.core.close_dispatch()
            self.core.join()  # also ends the signal thread's wait
            signals.join(1.0)
        return 0


    def _watch_dispatcher(self, hub: Any, dispatcher: Any, start: Callable[[], None]) -> Any:
        """Starts the hub's watcher on the dispatcher's queue; returns it."""
        watcher = hub.loop.io(dispatcher.queue_fd, 1)
        watcher.start(dispatcher.drain, start)
        # The first drain arms the queue's wake-up. It runs on the hub, like
        # every later one: requests may already be queued, and a worker
        # greenlet that finishes one switches to the hub, never back here,
        # so a drain run from this greenlet would leave it suspended for
        # good (no "Listening", stop signals unheeded).
        hub.loop.run_callback(dispatcher.drain, start)
        return watcher

    def _after_stop(self) -> None:
        """After the stop sequence, before the dispatcher closes."""

    def _handle_events_forever(self) -> None:
        from gevent.socket import wait_read

        while True:
            wait_read(self.core.event_fd)
            self.server._handle_events(self.core.events(0), self.stop)


class _InlineLoop(_GeventLoop):
    """gevent dispatch with io_threads = 0: the hub also runs the core's
    event loop. An io watcher on the loop's reactor descriptor (readable
    while the loop has work: a socket ready, a deadline due, a handler
    posted by a greenlet's write) calls the dispatcher's run_io, which polls
    the loop and then switches to the greenlets it made ready. Everything
    else is _GeventLoop's: the core takes the signals on a small thread of
    its own, so the exit deadline, SIGUSR1 and the blocked-hub monitor never
    need the hub."""

    def _watch_dispatcher(self, hub: Any, dispatcher: Any, start: Callable[[], None]) -> Any:
        run_io = dispatcher.io_runner()
        watcher = hub.loop.io(dispatcher.reactor_fd, 1)
        watcher.start(run_io, start)
        # From the hub, as every later run: a worker greenlet that finishes
        # switches to the hub, never back to the greenlet that started it.
        hub.loop.run_callback(run_io, start)
        return watcher

    def _after_stop(self) -> None:
        import gevent

        # force_close() only asked the connections to close: the loop, on
        # the hub, closes them. Let it run until they are gone (bounded).
        deadline = time.monotonic() + _WORKER_GRACE
        while self.core.stats()["open_connections"] and time.monotonic() < deadline:
            gevent.sleep(0.01)


class _SignalThread:
    """Answers SIGUSR1, and announces a stop signal, from an OS thread
    (never a greenlet: under monkey-patching it is started with gevent's
    original thread function), so a request that keeps the hub busy delays
    neither: the dump shows that request's frame on the main thread, and
    "Received SIGTERM" is logged when the signal arrives. The stop itself
    runs on the hub; the core has armed its deadline already."""

    def __init__(self, core: Any, stop: GracefulStop) -> None:
        self.core = core
        self.stop = stop
        self.join = start_os_thread(self._run, "baseplate-signals")

    def _run(self) -> None:
        while True:
            try:
                signum = self.core.wait_signal(-1)
                if signum < 0:
                    return  # the server stopped
                if signum == signal.SIGUSR1:
                    dump_stacks(self.core.stats())
                elif signum:
                    self.stop.announce(signum)
            except Exception:  # never end the thread
                logger.exception("signal thread")


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
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _server_name_port(listener: socket.socket) -> Tuple[str, str]:
    name = listener.getsockname()
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        return str(name[0]), str(name[1])
    return "localhost", ""
