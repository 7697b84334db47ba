"""Lifecycle hooks: what else must happen when a graceful stop begins.

Every way of serving (the core in threads or gevent mode, a custom server
factory, a pywsgi handler) calls :func:`notify_stop` once, right after it
logs that it is stopping and before it drains. Integrations register with
:func:`on_stop` (for example baseplate.py's ``SERVER_STATE``, which health
checks read during the drain).
"""

import logging
from typing import Callable, List

logger = logging.getLogger(__name__)

_stop_callbacks: List[Callable[[], None]] = []
_stopped = False


def on_stop(callback: Callable[[], None]) -> None:
    """Calls ``callback()`` once when a graceful stop begins."""
    _stop_callbacks.append(callback)


def notify_stop() -> None:
    """Runs the stop callbacks, once per process; a failing one is logged."""
    global _stopped
    if _stopped:
        return
    _stopped = True
    for callback in _stop_callbacks:
        try:
            callback()
        except Exception:
            logger.exception("stop hook %r failed", callback)
