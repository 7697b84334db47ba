"""Drives a server object from a custom ``[server:NAME] factory``, as
baseplate.py does: ``start()``/``stop()``, or ``serve_forever()``.

Where it runs: on the gevent hub when ``dispatch`` is gevent (the default
when gevent is installed: the standard library is monkey-patched before the
app is imported, as baseplate.py's ``baseplate-serve`` does) or when the
factory returned a gevent server (``gevent.pywsgi.WSGIServer``, any
``gevent.baseserver.BaseServer``); the main greenlet then waits on a
``gevent.event.Event``, so the hub runs and the server accepts. Otherwise
(``dispatch = threads`` and a server of its own kind) the main thread waits
on an event a signal handler can set (``_PipeEvent``) and
``serve_forever()`` runs on a thread.

It stops like every other way of serving (``_stop.GracefulStop``): the stop
signal, the drain, ``stop()`` (which stops accepting and waits for the
server's own connections), bounded by ``stop_timeout``; a second stop
signal cuts the drain and the wait. ``start()``, ``serve_forever()`` or
``stop()`` raising is logged with its traceback and ends the command with
exit status 1, so that a supervisor restarts it; so does a
``serve_forever()`` that returns before any stop signal.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading

from typing import Any, Callable, List, Optional

from baseplate_serve import _core
from baseplate_serve._errors import ServerError
from baseplate_serve._listener import describe
from baseplate_serve._stackdump import dump_stacks
from baseplate_serve._stop import STOP_SIGNALS, GracefulStop, deadline_line, deadline_seconds

logger = logging.getLogger("baseplate_serve")


def install_signal_handlers(stop: GracefulStop) -> None:
    """Python-level handlers for the stop signals and SIGUSR1, on the gevent
    hub as on threads (for a server with no native core to own the signals).

    Not gevent's signal watchers: those run only when the hub does, so a
    request spinning on the CPU would hold off the stop and the dump for as
    long as it spins. A Python handler runs in the main thread between two
    bytecodes, whatever greenlet is running: the first stop signal arms the
    exit deadline at once, and SIGUSR1 dumps the spinning frame too."""
    seconds = deadline_seconds(stop.drain_time, stop.stop_timeout)

    def on_stop_signal(signum: int, _frame: Any) -> None:
        if not stop.requested:
            line = deadline_line(seconds).replace("{detail}", "the server's own stop still under way")
            _core.arm_exit_deadline(seconds, line)
        stop.signal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_stop_signal)
        signal.siginterrupt(sig, False)
    signal.signal(signal.SIGUSR1, lambda signo, frame: dump_stacks())
    signal.siginterrupt(signal.SIGUSR1, False)


def is_gevent_server(server: Any) -> bool:
    """A gevent server (``gevent.baseserver.BaseServer``), which accepts
    only while the hub runs. gevent is not imported for the check."""
    baseserver = sys.modules.get("gevent.baseserver")
    return baseserver is not None and isinstance(server, baseserver.BaseServer)


class _Call:
    """One call of the server's (``serve_forever``, ``stop``) run on a
    thread or a greenlet: whether it is done, and what it raised."""

    def __init__(self, name: str, target: Callable[[], Any], done: Callable[[], None]) -> None:
        self.name = name
        self._target = target
        self._done = done
        self.finished = False
        self.error: Optional[BaseException] = None

    def __call__(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - reported by the main greenlet or thread
            if type(exc).__name__ != "GreenletExit":  # killed at stop_timeout: not the server's fault
                self.error = exc
        finally:
            self.finished = True
            self._done()


class _PipeEvent:
    """threading.Event's interface, but safe to set() from a Python signal
    handler: threading.Event.set() takes a lock that the main thread, which
    the handler interrupts, may be holding (in wait() or clear()): a
    deadlock. Here set() is a flag and one byte written to a pipe."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._flag = False

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._write, b"x")
        except BlockingIOError:  # full: a wake-up is pending anyway
            pass

    def clear(self) -> None:
        self._flag = False  # first: a set() from here on is not lost
        try:
            while os.read(self._read, 512):
                pass
        except BlockingIOError:
            pass

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: Optional[float] = None) -> bool:
        if not self._flag:
            select.select([self._read], [], [], timeout)
        return self._flag


class _Threads:
    """The main thread waits on a pipe; calls run on threads."""

    where = "threads"

    def __init__(self) -> None:
        self.event: Any = _PipeEvent()

    def spawn(self, call: _Call) -> None:
        threading.Thread(target=call, name=f"custom-server-{call.name}", daemon=True).start()

    def close_remaining(self, server: Any) -> int:
        return 0  # threads cannot be closed from outside; the exit deadline bounds them


class _Hub:
    """The main greenlet waits on a gevent.event.Event, so the hub runs;
    calls run on greenlets."""

    where = "the gevent hub"

    def __init__(self) -> None:
        import gevent.event

        self.event = gevent.event.Event()

    def spawn(self, call: _Call) -> None:
        import gevent

        gevent.spawn(call)

    def close_remaining(self, server: Any) -> int:
        """Kills the greenlets still serving connections of a gevent server
        with a pool (what ``BaseServer.stop`` does at its own timeout)."""
        pool = getattr(server, "pool", None)
        if not is_gevent_server(server) or pool is None:
            return 0
        count = len(pool)
        if count:
            pool.kill(block=True, timeout=0.3)  # within the exit deadline's 1 s margin
        return count


def run_custom_server(
    server: Any,
    listener: socket.socket,
    on_ready: Optional[Callable[[], None]] = None,
    *,
    drain_time: float = 0.0,
    stop_timeout: float = 0.0,
    dispatch: str = "threads",
) -> None:
    """Serves until a stop signal, then stops gracefully (see the module
    docstring). Raises ServerError when the server's own code failed."""
    gevent_server = is_gevent_server(server)
    on_hub = dispatch == "gevent" or gevent_server
    if on_hub and dispatch != "gevent":
        logger.warning(
            "dispatch = %s, but the server factory returned a gevent server (%s): it runs on the gevent hub,"
            " without monkey-patching (an app that blocks, blocks every request)",
            dispatch,
            type(server).__name__,
        )
    if gevent_server:
        # gevent accepts up to 100 connections per wake-up: on a blocking
        # listener (one not made by gevent's patched socket module) the
        # accept after the last one would block the hub for good.
        listener.setblocking(False)
    connections = None
    pywsgi = sys.modules.get("gevent.pywsgi")
    if pywsgi is not None and isinstance(server, pywsgi.WSGIServer):
        # As on the handler path: the stop closes idle keep-alive connections
        # and answers with Connection: close (else gevent's stop() waits for
        # keep-alive clients, then kills their requests mid-way).
        from baseplate_serve._pywsgi import Connections, stoppable_handler

        connections = Connections()
        server.handler_class = stoppable_handler(server.handler_class, connections)
    loop: Any = _Hub() if on_hub else _Threads()
    calls: List[_Call] = []
    serving: Optional[_Call] = None
    stopping: Optional[_Call] = None

    def spawn(name: str, target: Callable[[], Any]) -> _Call:
        call = _Call(name, target, stop.wake)
        calls.append(call)
        loop.spawn(call)
        return call

    def stop_accepting() -> None:
        nonlocal stopping
        if connections is not None:
            connections.stopping = True
        # stop() stops accepting and waits for the server's own connections;
        # it runs apart so that stop_timeout and a second signal can cut the wait.
        for name in ("stop", "shutdown"):  # shutdown(): the socketserver spelling
            method = getattr(server, name, None)
            if callable(method):
                stopping = spawn(name, method)
                break
        if connections is not None:
            connections.close_idle()

    def in_flight() -> int:
        return sum(1 for call in calls if not call.finished)

    stop = GracefulStop(
        drain_time,
        stop_timeout,
        stop_accepting=stop_accepting,
        in_flight=in_flight,
        close_remaining=lambda: loop.close_remaining(server),
        event=loop.event,
    )
    install_signal_handlers(stop)

    if callable(getattr(server, "start", None)):
        try:
            server.start()
        except Exception as exc:
            _fail(server, "start", exc)
    elif callable(getattr(server, "serve_forever", None)):
        serving = spawn("serve_forever", server.serve_forever)
    else:
        raise ServerError(
            f"the server factory returned {type(server).__name__}, which has neither start() nor serve_forever()"
        )
    logger.info("Custom server %s runs on %s", type(server).__name__, loop.where)
    logger.info("Listening on %s", describe(listener))
    if on_ready is not None:
        on_ready()

    while True:
        loop.event.clear()  # before the checks: a wake-up after them is not lost
        if stop.requested or (serving is not None and serving.finished):
            break
        loop.event.wait(1.0)
    if not stop.requested:
        assert serving is not None
        _fail(server, "serve_forever", serving.error)

    stop.run()
    failed = [call for call in calls if call.error is not None]
    for call in failed:
        logger.error(
            "%s.%s() raised during the stop",
            type(server).__name__,
            call.name,
            exc_info=(type(call.error), call.error, call.error.__traceback__),  # type: ignore[union-attr]
        )
    if stopping is None:
        logger.warning("%s has no stop(): its connections end with the process", type(server).__name__)
    for call in calls:
        if not call.finished:
            why = "a second stop signal" if stop.cut else f"stop_timeout ({stop_timeout:g} s)"
            logger.warning("%s.%s() has not returned after %s: exiting anyway", type(server).__name__, call.name, why)
    logger.info("Stopped")
    if failed:
        raise ServerError(f"{type(server).__name__}.{failed[0].name}() raised {type(failed[0].error).__name__}")


def _fail(server: Any, name: str, error: Optional[BaseException]) -> None:
    """Logs what the server's own code did and raises ServerError (exit 1)."""
    what = f"{type(server).__name__}.{name}()"
    if error is None:
        logger.error("%s returned before any stop signal: the server no longer serves", what)
        raise ServerError(f"{what} returned before any stop signal")
    logger.error("%s raised", what, exc_info=(type(error), error, error.__traceback__))
    raise ServerError(f"{what} raised {type(error).__name__}: {error}")
