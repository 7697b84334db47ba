"""The WSGI ``handler`` option: gevent's pywsgi with the app's handler class.

A ``gevent.pywsgi.WSGIHandler`` subclass only makes sense inside pywsgi, and
the native HTTP core has no place for it: when ``handler`` is set, the app is
served the way baseplate.py serves it (pywsgi, a gevent Pool, gevent's
monkey-patching), with a WARNING saying so. Apps without ``handler`` never
touch this module.
"""
from __future__ import annotations

import logging
import select
import socket

from typing import Any, Callable, Optional, Set

from baseplate_serve._errors import ConfigError
from baseplate_serve._factory import load_factory
from baseplate_serve._custom import install_signal_handlers
from baseplate_serve._listener import describe
from baseplate_serve._options import parse_server_options
from baseplate_serve._stop import GracefulStop

logger = logging.getLogger("baseplate_serve")


def prepare(cfg: Any) -> None:
    """Monkey-patches with gevent before the app is imported, as baseplate.py does."""
    try:
        from gevent import monkey
    except ImportError:
        raise ConfigError.at(cfg.filename, cfg.server_section, "handler", "needs gevent (pip install gevent)") from None
    monkey.patch_all()


class Connections:
    """The pywsgi handlers alive (one per connection), so that the stop can
    close the idle keep-alive ones and answer with ``Connection: close``."""

    def __init__(self) -> None:
        self.handlers: Set[Any] = set()
        self.stopping = False

    def close_idle(self) -> None:
        """Kills the handlers waiting for a next request on a connection that
        has served one: no request is in flight on it, and none has arrived
        (a connection with bytes waiting is left to read and serve them, one
        with none served yet to get its first request within the stop)."""
        for handler in list(self.handlers):
            if handler.bps_idle and handler.bps_served and not _readable(handler.socket):
                handler.bps_greenlet.kill(block=False)


def _readable(sock: Any) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed meanwhile
        return False


def stoppable_handler(handler_class: Any, connections: Connections) -> Any:
    """The app's handler class, tracked by ``connections``: whether it waits
    for a request line, how many requests it served; during the stop its
    responses carry ``Connection: close`` (unless the app set Connection)."""
    import gevent

    class StoppableHandler(handler_class):  # type: ignore[misc,valid-type]
        bps_idle = False
        bps_served = 0
        bps_greenlet: Any = None

        def handle(self) -> Any:
            self.bps_greenlet = gevent.getcurrent()
            connections.handlers.add(self)
            try:
                return super().handle()
            finally:
                connections.handlers.discard(self)

        def read_requestline(self) -> Any:
            self.bps_idle = True
            try:
                return super().read_requestline()
            finally:
                self.bps_idle = False

        def handle_one_response(self) -> Any:
            try:
                return super().handle_one_response()
            finally:
                self.bps_served += 1

        def start_response(self, status: str, headers: Any, exc_info: Any = None) -> Any:
            if connections.stopping and not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
            return super().start_response(status, headers, exc_info)

    StoppableHandler.__name__ = StoppableHandler.__qualname__ = handler_class.__name__
    return StoppableHandler


def serve(
    cfg: Any,
    listener: socket.socket,
    app: Any,
    on_ready: Optional[Callable[[], None]],
    *,
    drain_time: float,
    stop_timeout: float,
) -> None:
    """Serves with gevent.pywsgi until a stop signal, then stops as every server does (_stop)."""
    import gevent.event

    from gevent.pool import Pool
    from gevent.pywsgi import LoggingLogAdapter, WSGIServer

    parsed = parse_server_options(cfg.server, cfg.filename, cfg.server_section)
    handler_class = load_factory(cfg.server["handler"], "", filename=cfg.filename, section=cfg.server_section)
    logger.warning(
        "[%s] handler = %s: serving with gevent.pywsgi instead of the native HTTP core",
        cfg.server_section,
        cfg.server["handler"].strip(),
    )
    connections = Connections()
    wsgi_logger = logging.getLogger("baseplate_serve.pywsgi")
    pool = Pool(parsed.values["max_concurrency"] or None)
    server = WSGIServer(
        listener,
        application=app,
        spawn=pool,
        log=LoggingLogAdapter(wsgi_logger, level=logging.DEBUG),
        error_log=LoggingLogAdapter(wsgi_logger, level=logging.ERROR),
        handler_class=stoppable_handler(handler_class, connections),
    )
    server.stop_timeout = stop_timeout

    def stop_accepting() -> None:
        connections.stopping = True
        server.close()
        connections.close_idle()

    def close_remaining() -> int:
        # What BaseServer.stop() does at its timeout: kill the greenlets still
        # serving (each closes its connection as it dies).
        count = len(pool)
        if count:
            pool.kill(block=True, timeout=0.3)  # within the exit deadline's 1 s margin
        return count

    # The stop sequence of every way of serving, on the hub: signal, drain,
    # close the listener and the idle connections, wait for the pool up to
    # stop_timeout, kill the rest.
    stop = GracefulStop(
        drain_time,
        stop_timeout,
        stop_accepting=stop_accepting,
        in_flight=lambda: len(pool),
        close_remaining=close_remaining,
        event=gevent.event.Event(),
    )
    install_signal_handlers(stop)  # Python-level: heard even while a request spins on the CPU
    server.start()
    logger.info("Listening on %s", describe(listener))
    if on_ready is not None:
        on_ready()
    stop.wait_for_signal()
    stop.run()
    logger.info("Stopped")
