"""The WSGI ``handler`` option: gevent's pywsgi with the app's handler class.

A ``gevent.pywsgi.WSGIHandler`` subclass only makes sense inside pywsgi, and
the native HTTP core has no place for it: when ``handler`` is set, the app is
served the way baseplate.py serves it (pywsgi, a gevent Pool, gevent's
monkey-patching), with a WARNING saying so. Apps without ``handler`` never
touch this module.
"""
from __future__ import annotations

import logging
import socket

from typing import Any, Callable, Optional

from baseplate_serve import config
from baseplate_serve._errors import ConfigError
from baseplate_serve._factory import load_factory
from baseplate_serve._custom import install_signal_handlers
from baseplate_serve._listener import describe
from baseplate_serve._stop import GracefulStop

logger = logging.getLogger("baseplate_serve")


def prepare(cfg: Any) -> None:
    """Monkey-patches with gevent before the app is imported, as baseplate.py does."""
    try:
        from gevent import monkey
    except ImportError:
        raise ConfigError.at(cfg.filename, cfg.server_section, "handler", "needs gevent (pip install gevent)") from None
    monkey.patch_all()


def serve(cfg: Any, listener: socket.socket, app: Any, on_ready: Optional[Callable[[], None]]) -> None:
    """Serves with gevent.pywsgi until a stop signal, then stops as every server does (_stop)."""
    import gevent
    import gevent.event

    from gevent.pool import Pool
    from gevent.pywsgi import LoggingLogAdapter, WSGIServer

    try:
        parsed = config.parse_config(
            cfg.server,
            {
                "max_concurrency": config.Optional(config.Integer),
                "stop_timeout": config.Optional(config.TimespanWithLegacyFallback),
                "drain_time": config.Optional(config.TimespanWithLegacyFallback),
            },
        )
    except config.ConfigurationError as exc:
        raise ConfigError.at(cfg.filename, cfg.server_section, exc.key, exc.error) from None
    handler_class = load_factory(cfg.server["handler"], "", filename=cfg.filename, section=cfg.server_section)
    logger.warning(
        "[%s] handler = %s: serving with gevent.pywsgi instead of the native HTTP core",
        cfg.server_section,
        cfg.server["handler"].strip(),
    )
    wsgi_logger = logging.getLogger("baseplate_serve.pywsgi")
    server = WSGIServer(
        listener,
        application=app,
        spawn=Pool(parsed.max_concurrency),
        log=LoggingLogAdapter(wsgi_logger, level=logging.DEBUG),
        error_log=LoggingLogAdapter(wsgi_logger, level=logging.ERROR),
        handler_class=handler_class,
    )
    stop_timeout = parsed.stop_timeout.total_seconds() if parsed.stop_timeout else 0.0
    drain_time = parsed.drain_time.total_seconds() if parsed.drain_time else 0.0
    server.stop_timeout = stop_timeout
    pool = server.pool

    def close_remaining() -> int:
        # What BaseServer.stop() does at its timeout: kill the greenlets still
        # serving (each closes its connection as it dies).
        count = len(pool)
        if count:
            pool.kill(block=True, timeout=0.3)  # within the exit deadline's 1 s margin
        return count

    # The stop sequence of every way of serving, on the hub: signal, drain,
    # close the listener, wait for the pool up to stop_timeout, kill the rest.
    stop = GracefulStop(
        drain_time,
        stop_timeout,
        stop_accepting=server.close,
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
