"""The blocked-hub monitor: an OS thread that notices when the gevent hub
has not run for longer than a threshold (a request spinning on the CPU, a
blocking call that was not monkey-patched) and logs one WARNING, on logger
``baseplate_serve.monitor``, with the stack of what blocks it.

How it works: a timer on the hub stamps the time every ``threshold / 10``
(at least 5 ms, at most 100 ms); the monitor thread, a real OS thread even
under monkey-patching, checks the stamp as often. When the hub has not run
for longer than the threshold, the greenlet keeping it is the one running
on the hub's thread, so its frames are that thread's current frames. One
WARNING per blocked stretch; the next one after the hub has run again.

gevent ships a similar monitor (``gevent.config.monitor_thread``,
``gevent.events.EventLoopBlocked``); it tracks every greenlet switch with
``greenlet.settrace``, a cost on every request here, where a batch of
requests is served with one switch. This one costs one timer callback per
tick.

Any gevent way of serving calls :func:`start_blocked_hub_monitor` on the
hub's thread once it serves (after logging is configured: it gives the
logging handlers native locks, see ``_stackdump.use_native_handler_locks``). The threshold is ``monitoring.blocked_hub``
in ``[server:NAME]`` (baseplate.py's name; a timespan such as
``100 milliseconds``, or plain seconds), default 1 s; ``0`` turns it off.
"""
from __future__ import annotations

import logging
import sys
import time

from typing import Any, Dict, Optional

from baseplate_serve._errors import ConfigError
from baseplate_serve._stackdump import (
    _original,
    format_frame,
    real_thread_ident,
    start_os_thread,
    use_native_handler_locks,
)

logger = logging.getLogger("baseplate_serve.monitor")

#: The default threshold, seconds (baseplate.py's runtime monitor has none;
#: gevent's own monitor uses 0.1 s, noisy for ordinary CPU-bound requests).
DEFAULT_THRESHOLD = 1.0
OPTION = "monitoring.blocked_hub"


def blocked_hub_threshold(server_config: Dict[str, str], filename: str, section: str) -> float:
    """``monitoring.blocked_hub`` from ``[server:NAME]``, in seconds (0: off)."""
    text = server_config.get(OPTION)
    if text is None or not text.strip():
        return DEFAULT_THRESHOLD
    from baseplate_serve import config

    try:
        seconds = config.TimespanWithLegacyFallback(text.strip()).total_seconds()
    except (ValueError, config.ConfigurationError) as exc:
        raise ConfigError.at(filename, section, OPTION, f"not a timespan: {text.strip()!r} ({exc})") from None
    if seconds < 0:
        raise ConfigError.at(filename, section, OPTION, f"must not be negative, got {text.strip()!r}")
    return seconds


class BlockedHubMonitor:
    """A running monitor; :meth:`stop` ends it."""

    def __init__(self, threshold: float, hub: Any) -> None:
        self.threshold = threshold
        self.tick = min(0.1, max(0.005, threshold / 10))
        self.hub_ident = real_thread_ident()
        self.last_run = time.monotonic()
        self.stopped = False
        self.warnings = 0  #: WARNINGs logged (for tests and diagnostics)
        self._timer = hub.loop.timer(self.tick, self.tick)
        self._timer.start(self._stamp)
        try:
            self._timer.ref = False  # the monitor alone never keeps the hub alive
        except AttributeError:
            pass
        self._sleep = _original("time", "sleep")
        use_native_handler_locks()
        self.join = start_os_thread(self._watch, "baseplate-hub-monitor")

    def _stamp(self) -> None:
        self.last_run = time.monotonic()

    def _watch(self) -> None:
        warned = False
        while not self.stopped:
            self._sleep(self.tick)
            blocked = time.monotonic() - self.last_run
            if blocked <= self.threshold:
                warned = False
                continue
            if warned or self.stopped:
                continue
            warned = True
            self.warnings += 1
            frame = sys._current_frames().get(self.hub_ident)
            stack = format_frame(frame) if frame is not None else "(no Python frame)"
            logger.warning(
                "The gevent hub has been blocked for %.3f s (monitoring.blocked_hub = %.3g s): nothing else"
                " runs meanwhile, not other requests, timers or signals. The blocking greenlet:\n%s",
                blocked,
                self.threshold,
                stack,
            )

    def stop(self) -> None:
        self.stopped = True
        self._timer.stop()


def start_blocked_hub_monitor(threshold_seconds: float = DEFAULT_THRESHOLD, hub: Optional[Any] = None) -> BlockedHubMonitor:
    """Starts watching the hub of the calling thread (or ``hub``)."""
    if hub is None:
        import gevent

        hub = gevent.get_hub()
    return BlockedHubMonitor(threshold_seconds, hub)
