"""The anchor peer: gevent's pywsgi server built the way baseplate.py builds it.

Reproduces what `baseplate-serve` does for `factory = baseplate.server.wsgi`
(baseplate/server/wsgi.py, net.py and __init__.py), without baseplate itself:
patch_all() before anything else, a listener bound with SO_REUSEADDR +
SO_REUSEPORT + listen(128), an unbounded gevent Pool as spawn, the access log
going to a DEBUG-level logging adapter (so, like baseplate.py at its default
INFO level, each line is formatted but then dropped), and the app from the
[app:main] factory of the ini in the current directory (examples/hello).

    python baseplate_wsgi.py --bind 127.0.0.1:PORT [--nodelay] [hello.ini]

--nodelay sets TCP_NODELAY on accepted sockets. pywsgi does not, and with
keep-alive its separate writes of headers and body then wait on Nagle + the
client's delayed ACK (~40 ms a request); the fair comparison is with it set.
"""
from gevent import monkey

monkey.patch_all()  # first, as baseplate.py's bin/baseplate-serve does

import argparse  # noqa: E402
import configparser  # noqa: E402
import fcntl  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.pool import Pool  # noqa: E402
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer  # noqa: E402

logger = logging.getLogger("baseplate.server.wsgi")


class NoDelayHandler(WSGIHandler):
    """pywsgi's handler with Nagle's algorithm off on the connection."""

    def __init__(self, sock, address, server, rfile=None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)


def bind_socket(host: str, port: int) -> socket.socket:
    """baseplate/server/net.py: bind_socket()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    flags = fcntl.fcntl(sock.fileno(), fcntl.F_GETFD)
    fcntl.fcntl(sock.fileno(), fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def load_app(config_file: str):
    """The [app:main] factory, called with its options as baseplate.py does."""
    sys.path.append(os.getcwd())
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(config_file)
    app_config = dict(parser["app:main"])
    module_name, _, func_name = app_config["factory"].partition(":")
    return getattr(importlib.import_module(module_name), func_name or "make_app")(app_config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1:9090")
    parser.add_argument("--nodelay", action="store_true")
    parser.add_argument("config_file", nargs="?", default="hello.ini")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")

    logging.basicConfig(level=logging.INFO, format="%(levelname)-8s %(message)s")
    app = load_app(args.config_file)
    listener = bind_socket(host, int(port))

    # baseplate/server/wsgi.py: make_server()
    pool = Pool()
    server = WSGIServer(
        listener,
        application=app,
        spawn=pool,
        log=LoggingLogAdapter(logger, level=logging.DEBUG),
        error_log=LoggingLogAdapter(logger, level=logging.ERROR),
        **({"handler_class": NoDelayHandler} if args.nodelay else {}),
    )
    server.stop_timeout = 10

    # baseplate.py drains for 5 s on SIGTERM; a benchmark has nothing to drain.
    # Keep the watcher referenced: once collected, SIGTERM is back to SIG_DFL.
    sigterm = gevent.signal_handler(signal.SIGTERM, server.stop)  # noqa: F841
    print(f"Listening on {listener.getsockname()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
