"""The anchor peer for Thrift: baseplate.py's gevent Thrift server reproduced.

Reproduces what `baseplate-serve` does for `factory = baseplate.server.thrift`
(baseplate/server/thrift.py, net.py and __init__.py), without baseplate
itself: patch_all() before anything else, a listener bound with
SO_REUSEADDR + SO_REUSEPORT + listen(128), a gevent StreamServer with an
unbounded Pool whose handle() wraps each accepted socket in a TSocket, a
TBufferedTransport and a THeaderProtocol that accepts THeader, framed binary
and unframed binary clients, and calls processor.process(prot, prot) until
the client goes away. The processor is the [app:main] factory of the ini in
the current directory (examples/thrift_echo: echo.ini). The tracing
attributes baseplate.py sets around each connection are left out.

    cd examples/thrift_echo && python baseplate_thrift.py --bind 127.0.0.1:PORT [echo.ini]

Needs gevent and thrift (a venv of its own is fine).
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
from gevent.server import StreamServer  # noqa: E402
from thrift.protocol.THeaderProtocol import THeaderProtocolFactory  # noqa: E402
from thrift.transport.THeaderTransport import THeaderClientType  # noqa: E402
from thrift.transport.TSocket import TSocket  # noqa: E402
from thrift.transport.TTransport import TBufferedTransportFactory, TTransportException  # noqa: E402

logger = logging.getLogger("baseplate.server.thrift")


class GeventServer(StreamServer):
    """baseplate/server/thrift.py: GeventServer, less its tracing context."""

    def __init__(self, processor, *args, **kwargs):
        self.processor = processor
        self.transport_factory = TBufferedTransportFactory()
        self.protocol_factory = THeaderProtocolFactory(
            # allow non-headerprotocol clients to talk with us
            allowed_client_types=[
                THeaderClientType.HEADERS,
                THeaderClientType.FRAMED_BINARY,
                THeaderClientType.UNFRAMED_BINARY,
            ]
        )
        super().__init__(*args, **kwargs)

    def handle(self, client_socket, address):  # pylint: disable=method-hidden,unused-argument
        client = TSocket()
        client.setHandle(client_socket)

        trans = self.transport_factory.getTransport(client)
        prot = self.protocol_factory.getProtocol(trans)

        try:
            while self.started:
                self.processor.process(prot, prot)
        except TTransportException:
            pass
        finally:
            trans.close()


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
    return getattr(importlib.import_module(module_name), func_name or "make_processor")(app_config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", default="127.0.0.1:9090")
    parser.add_argument("config_file", nargs="?", default="echo.ini")
    args = parser.parse_args()
    host, _, port = args.bind.rpartition(":")

    logging.basicConfig(level=logging.INFO, format="%(levelname)-8s %(message)s")
    processor = load_app(args.config_file)
    listener = bind_socket(host, int(port))

    # baseplate/server/thrift.py: make_server()
    pool = Pool()
    server = GeventServer(processor=processor, listener=listener, spawn=pool)
    server.stop_timeout = 10

    # baseplate.py drains for 5 s on SIGTERM; a benchmark has nothing to drain.
    # Keep the watcher referenced: once collected, SIGTERM is back to SIG_DFL.
    sigterm = gevent.signal_handler(signal.SIGTERM, server.stop)  # noqa: F841
    print(f"Listening on {listener.getsockname()}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
