"""Drives a server object from a custom ``[server:NAME] factory``, as
baseplate.py does: ``start()``/``stop()``, or ``serve_forever()``."""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time

from typing import Any, Callable, Optional

from baseplate_serve import _lifecycle
from baseplate_serve._listener import describe
from baseplate_serve._stackdump import dump_stacks

logger = logging.getLogger("baseplate_serve")


def run_custom_server(
    server: Any, listener: socket.socket, on_ready: Optional[Callable[[], None]] = None, drain_time: float = 0.0
) -> None:
    """Serves until SIGTERM, SIGINT or SIGUSR2, then calls ``stop()``;
    SIGUSR1 logs every stack."""
    stop = threading.Event()

    def on_signal(signo: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, on_signal)
        signal.siginterrupt(sig, False)
    signal.signal(signal.SIGUSR1, lambda signo, frame: dump_stacks())
    signal.siginterrupt(signal.SIGUSR1, False)

    logger.info("Listening on %s", describe(listener))
    if hasattr(server, "start"):
        server.start()
        if on_ready is not None:
            on_ready()
        while not stop.wait(1.0):
            pass
        _drain(drain_time)
        logger.info("Stopping gracefully")
        server.stop()
    else:
        thread = threading.Thread(target=server.serve_forever, name="custom-server", daemon=True)
        thread.start()
        if on_ready is not None:
            on_ready()
        while not stop.wait(1.0) and thread.is_alive():
            pass
        _drain(drain_time)
        if hasattr(server, "stop"):
            server.stop()
    logger.info("Stopped")


def _drain(drain_time: float) -> None:
    """Keeps serving for ``drain_time`` after the signal, as baseplate.py does."""
    _lifecycle.notify_stop()
    if drain_time > 0:
        logger.info("Draining for %.3g s before stopping", drain_time)
        time.sleep(drain_time)
