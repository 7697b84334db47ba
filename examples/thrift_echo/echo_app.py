"""The Thrift echo example: a generated processor served by
`baseplate-serve echo.ini` (factory = baseplate.server.thrift)."""
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from echo import Echo  # noqa: E402  (generated code, see echo.thrift)
from echo.ttypes import EchoError  # noqa: E402

_local = threading.local()


class Handler:
    def __init__(self) -> None:
        self.remembered = ""

    def echo(self, message):
        return message

    def fail_declared(self, message):
        raise EchoError(message=message)

    def fail_undeclared(self, message):
        raise RuntimeError(message)

    def remember(self, message):
        self.remembered = message

    def recall(self):
        return self.remembered

    def request_headers(self):
        return {k.decode(): v.decode() for k, v in _local.headers.items()}


class Processor(Echo.Processor):
    """Reads the request's info headers and answers one, the way baseplate.py
    processors use the THeader protocol."""

    def process(self, iprot, oprot):
        _local.headers = iprot.get_headers()
        trace = _local.headers.get(b"Trace")
        if trace is not None:
            oprot.trans.set_header(b"Echo-Trace", trace)
        return super().process(iprot, oprot)


def make_processor(app_config):
    return Processor(Handler())
