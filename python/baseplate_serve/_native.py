"""Serves a Python app with the native core: worker threads, the event
loop of the main thread (signals, native log records) and graceful stop."""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time

from typing import Any, Callable, Dict, List, Optional

from baseplate_serve import _core
from baseplate_serve._file_wrapper import FileWrapper
from baseplate_serve._listener import describe
from baseplate_serve._logging import emit_native
from baseplate_serve._options import parse_server_options
from baseplate_serve._stackdump import dump_stacks

logger = logging.getLogger("baseplate_serve")

#: How long the main thread waits for the workers once the network is done.
_WORKER_JOIN_TIMEOUT = 5.0


class NativeServer:
    """A native-core server for one app (``protocol``: "wsgi" for a WSGI
    callable, "thrift" for a TProcessor); ``serve_forever()`` blocks until a
    SIGTERM, SIGINT or SIGUSR2, then stops gracefully."""

    def __init__(
        self,
        server_config: Dict[str, str],
        listener: socket.socket,
        app: Any,
        *,
        protocol: str,
        filename: str,
        section: str,
    ) -> None:
        options = parse_server_options(server_config, filename, section)
        self._python_threads: int = options["python_threads"]
        self._drain_time: float = options["drain_time_ms"] / 1000.0
        self._listener = listener
        self._core = _core.Server(options, protocol)
        if protocol == "thrift":
            self._core.set_thrift_processor(app)
        else:
            name, port = _server_name_port(listener)
            self._core.set_wsgi_app(app, FileWrapper, name, port)
        self._core.adopt_listener(listener.fileno())
        self._workers: List[threading.Thread] = []

    def serve_forever(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Serves until a stop signal, then drains and returns. ``on_ready``
        runs once the server accepts (the Einhorn ACK)."""
        self._core.start(logging.getLogger().getEffectiveLevel())
        for i in range(self._python_threads):
            worker = threading.Thread(target=self._core.run_worker, name=f"baseplate-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        logger.info("Listening on %s", describe(self._listener))
        if on_ready is not None:
            on_ready()
        stop_signal = self._wait_for_stop()
        logger.info("Received %s, stopping gracefully", signal.Signals(stop_signal).name)
        if self._drain_time > 0:
            # Keep serving so load balancers notice before the listener goes.
            logger.info("Draining for %.3g s before stopping", self._drain_time)
            self._wait_for_stop(deadline=time.monotonic() + self._drain_time)
        forced = self._core.stop()
        if forced:
            logger.warning("stop_timeout reached: closed %d connection(s) with requests in flight", forced)
        self._core.close_queue()
        for worker in self._workers:
            worker.join(_WORKER_JOIN_TIMEOUT)
        self._core.join()
        _stop, _dump, records = self._core.events(0)
        emit_native(records)
        self._listener.close()
        logger.info("Stopped")


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
            stop_signal, dump, records = self._core.events(timeout_ms)
            emit_native(records)
            if dump:
                dump_stacks(self._core.stats())
            if stop_signal and deadline is None:
                return stop_signal


def _server_name_port(listener: socket.socket) -> "tuple[str, str]":
    name = listener.getsockname()
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        return str(name[0]), str(name[1])
    return "localhost", ""
