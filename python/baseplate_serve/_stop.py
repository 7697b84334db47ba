"""The graceful stop: one sequence for every way of serving.

The native core (threads and gevent dispatch), a custom ``[server:NAME]
factory`` and the pywsgi ``handler`` path all stop the same way::

    stop signal (SIGTERM, SIGINT, SIGUSR2 or SIGHUP)
      -> log "Received SIGTERM, stopping gracefully"
      -> _lifecycle.notify_stop()
      -> arm the exit deadline: drain_time + stop_timeout + 1 s from now
      -> drain: keep serving for drain_time
      -> stop accepting
      -> let what is in flight finish, up to stop_timeout
      -> close what is left (a WARNING with the count)
      -> return; the host logs "Stopped" and exits 0

A second stop signal during the stop ends the drain and the wait at once
(logged); the stop then closes what is left. If the host is stuck (a request
spinning on the CPU, a worker that never returns), the exit deadline, a
native thread, ends the process with status 1 and a line naming what was
cut. The native core arms that deadline itself, on its own thread, when the
signal arrives; other hosts have it armed here when the stop begins.

How a host uses it::

    stop = GracefulStop(
        drain_time, stop_timeout,
        stop_accepting=server.close,          # required
        in_flight=lambda: len(server.conns),  # what the wait waits for (default: nothing)
        close_remaining=server.kill_all,      # at stop_timeout; returns how many it closed
        event=gevent.event.Event(),           # on the gevent hub; default threading.Event()
    )
    stop.install_signal_handlers()            # or: the host calls stop.signal(signum) itself
    server.start()
    stop.wait_for_signal()                    # blocks until the first stop signal
    stop.run()                                # the sequence; returns how many were closed by force
    logger.info("Stopped")

- ``signal(signum)`` records a stop signal and never blocks: safe from a
  Python signal handler, a gevent signal handler or an event-loop callback.
  The first one makes ``wait_for_signal()`` return (and ``requested`` true);
  one during ``run()`` cuts the drain and the wait short.
- ``announce(signum)`` logs "Received SIGTERM, stopping gracefully" once;
  ``run()`` calls it, and a host whose main thread may be busy when the
  signal arrives can call it earlier from another thread.
- ``wake()`` makes the current wait of ``run()`` re-check ``in_flight()`` at
  once (call it when a connection closes, if you can; else the wait polls
  every ``poll`` seconds, 0.1 by default).
- ``wait``: a host whose main loop must keep handling its own events while
  it waits (the native core: logs, SIGUSR1) passes ``wait(seconds)``, which
  may return early; it must return promptly after ``wake()`` or ``signal()``.
- A host whose server stops itself in one blocking call (``server.stop()``
  of a custom factory, which waits for its own connections) passes that call
  as ``stop_accepting`` and leaves ``in_flight`` alone.
"""
from __future__ import annotations

import logging
import signal as _signal
import threading
import time

from typing import Any, Callable, Iterable, Optional

from baseplate_serve import _core, _lifecycle

logger = logging.getLogger("baseplate_serve")

#: The signals that stop gracefully. SIGHUP too: under a process manager it
#: means "go away", and its default action would cut requests in flight.
STOP_SIGNALS = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGUSR2, _signal.SIGHUP)

#: Added to drain_time + stop_timeout for the exit deadline: the time the
#: stop itself needs once stop_timeout is over (closing, logging, exiting).
DEADLINE_MARGIN = 1.0

DEADLINE_LINE = "stop exceeded drain_time + stop_timeout + 1 s ({seconds:g} s): exiting with {{detail}}"


def signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def deadline_line(seconds: float) -> str:
    """The exit deadline's line, formatted like the other log lines (the
    root handler's format, level CRITICAL, logger baseplate_serve);
    ``{detail}`` stays for the core to fill in with what is still in flight."""
    message = DEADLINE_LINE.format(seconds=seconds)
    record = logging.LogRecord("baseplate_serve", logging.CRITICAL, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        try:
            return handler.format(record)
        except Exception:  # a handler that cannot format out of context
            continue
    return "baseplate-serve: " + message


def deadline_seconds(drain_time: float, stop_timeout: float) -> float:
    return drain_time + stop_timeout + DEADLINE_MARGIN


class GracefulStop:
    """The stop sequence of one server (see the module docstring)."""

    def __init__(
        self,
        drain_time: float,
        stop_timeout: float,
        *,
        stop_accepting: Callable[[], Any],
        in_flight: Callable[[], int] = lambda: 0,
        close_remaining: Callable[[], int] = lambda: 0,
        event: Any = None,
        wait: Optional[Callable[[float], Any]] = None,
        poll: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.drain_time = max(0.0, drain_time)
        self.stop_timeout = max(0.0, stop_timeout)
        self._stop_accepting = stop_accepting
        self._in_flight = in_flight
        self._close_remaining = close_remaining
        self._event = event if event is not None else threading.Event()
        self._wait = wait
        self._poll = poll
        self._clock = clock
        self.requested = False  #: a stop signal arrived
        self.announced = False  #: "Received SIGTERM, stopping gracefully" is logged
        self.running = False  #: run() is under way
        self.cut = False  #: a second signal ended the drain and the wait
        self.first_signal = 0
        self.forced = 0  #: closed at stop_timeout (or on the second signal)

    # -- what hosts call from their signal handlers and event callbacks

    def signal(self, signum: int) -> None:
        """Records a stop signal; never blocks."""
        if not self.requested:
            self.requested = True
            self.first_signal = signum
        elif not self.cut:
            self.cut = True
            logger.warning(
                "Received %s during the stop: ending the %s now", signal_name(signum), "drain and the wait"
            )
        self._event.set()

    def announce(self, signum: int) -> None:
        """Logs "Received SIGTERM, stopping gracefully", once per stop. run()
        does it; a host whose main thread may be stuck when the signal
        arrives (the gevent hub) also calls it from a thread of its own, so
        the line is logged when the signal arrives. Never blocks for long."""
        if self.announced:
            return
        self.announced = True
        logger.info("Received %s, stopping gracefully", signal_name(signum))

    def wake(self) -> None:
        """Makes the current wait re-check what is in flight."""
        self._event.set()

    def install_signal_handlers(self, use_gevent: bool = False, signals: Iterable[int] = STOP_SIGNALS) -> None:
        """Routes the stop signals to :meth:`signal`: Python handlers (main
        thread), or gevent's (run on the hub) when ``use_gevent``."""
        for sig in signals:
            if use_gevent:
                import gevent

                gevent.signal_handler(sig, self.signal, sig)
            else:
                _signal.signal(sig, lambda signum, _frame: self.signal(signum))
                _signal.siginterrupt(sig, False)

    def wait_for_signal(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the first stop signal (or ``timeout``); True once one arrived."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            # Cleared before the check, as in _sleep_until: a wake() (the
            # native loops call it on every core event) must not leave the
            # event set, or every later wait returns at once and the main
            # greenlet spins on the CPU until the stop.
            self._event.clear()
            if self.requested:
                break
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                return False
            self._sleep(1.0 if remaining is None else min(1.0, remaining))
        return True

    # -- the sequence

    def run(self, signum: Optional[int] = None) -> int:
        """Runs the stop; returns how many connections or requests were
        closed by force. ``signum``: the signal, if :meth:`signal` was not called."""
        if signum is not None and not self.requested:
            self.signal(signum)
        self.running = True
        started = self._clock()
        self.announce(self.first_signal or _signal.SIGTERM)
        _lifecycle.notify_stop()
        if not _core.exit_deadline_armed():
            # The native core arms it when the signal arrives; other hosts here.
            seconds = deadline_seconds(self.drain_time, self.stop_timeout)
            line = deadline_line(seconds).replace("{detail}", "the server's own stop still under way")
            _core.arm_exit_deadline(seconds - (self._clock() - started), line)
        if self.drain_time > 0 and not self.cut:
            # Keep serving so load balancers notice before the listener goes.
            logger.info("Draining for %.3g s before stopping", self.drain_time)
            self._sleep_until(started + self.drain_time, lambda: self.cut)
        self._stop_accepting()
        wait_until = self._clock() + self.stop_timeout
        self._sleep_until(wait_until, lambda: self.cut or self._in_flight() == 0)
        self.forced = self._close_remaining()
        if self.forced:
            why = "a second stop signal" if self.cut else "stop_timeout reached"
            logger.warning("%s: closed %d connection(s) with requests in flight", why, self.forced)
        return self.forced

    def _sleep_until(self, deadline: float, done: Callable[[], bool]) -> None:
        while True:
            self._event.clear()  # before the check: a wake-up after it is not lost
            if done():
                return
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._sleep(min(remaining, self._poll))

    def _sleep(self, seconds: float) -> None:
        if self._wait is not None:
            self._wait(seconds)
        else:
            self._event.wait(seconds)
