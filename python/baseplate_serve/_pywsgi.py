"""The WSGI ``handler`` option: gevent's pywsgi with the app's handler class.

A ``gevent.pywsgi.WSGIHandler`` subclass only makes sense inside pywsgi, and
the native HTTP core has no place for it: when ``handler`` is set, the app is
served the way baseplate.py serves it (pywsgi, a gevent Pool, gevent's
monkey-patching), with a WARNING saying so. Apps without ``handler`` never
touch this module.
"""
from __future__ import annotations

import logging
import signal
import socket

from typing import Any, Callable, Optional

from baseplate_serve._errors import ConfigError
from baseplate_serve._factory import load_factory
from baseplate_serve import _lifecycle
from baseplate_serve._listener import describe
from baseplate_serve._options import parse_server_options
from baseplate_serve._stackdump import dump_stacks

logger = logging.getLogger("baseplate_serve")


def prepare(cfg: Any) -> None:
    """Monkey-patches with gevent before the app is imported, as baseplate.py does."""
    try:
        from gevent import monkey
    except ImportError:
        raise ConfigError.at(cfg.filename, cfg.server_section, "handler", "needs gevent (pip install gevent)") from None
    monkey.patch_all()


def serve(cfg: Any, listener: socket.socket, app: Any, on_ready: Optional[Callable[[], None]]) -> None:
    """Serves with gevent.pywsgi until SIGTERM, SIGINT or SIGUSR2."""
    import gevent
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
    wsgi_logger = logging.getLogger("baseplate_serve.pywsgi")
    server = WSGIServer(
        listener,
        application=app,
        spawn=Pool(parsed.values["max_concurrency"] or None),
        log=LoggingLogAdapter(wsgi_logger, level=logging.DEBUG),
        error_log=LoggingLogAdapter(wsgi_logger, level=logging.ERROR),
        handler_class=handler_class,
    )
    server.stop_timeout = parsed.stop_timeout
    stop = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        gevent.signal_handler(sig, stop.set)
    gevent.signal_handler(signal.SIGUSR1, dump_stacks)
    server.start()
    logger.info("Listening on %s", describe(listener))
    if on_ready is not None:
        on_ready()
    stop.wait()
    _lifecycle.notify_stop()
    if parsed.drain_time > 0:
        logger.info("Draining for %.3g s before stopping", parsed.drain_time)
        gevent.sleep(parsed.drain_time)
    logger.info("Stopping gracefully")
    server.stop(timeout=server.stop_timeout)
    logger.info("Stopped")
