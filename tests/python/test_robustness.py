"""Robustness of the native server against hostile clients and faulty apps,
end to end: the real CLI in a subprocess, raw bytes on sockets.

- HTTP: request smuggling, malformed request lines and header fields, limits
  (413 / 431), slow and idle clients, truncated and pipelined requests.
  Every hostile input asserts the exact status (or that the connection is
  closed without an answer), and then that the server answers a normal
  request on a new connection.
- WSGI apps that fail at every stage of a response, hang, or lose their
  client.
- Thrift: truncated, oversized, corrupt, deeply nested and unknown-transform
  messages close that connection only.
- Load: 5,000 idle keep-alive connections, and a graceful stop under steady
  load that loses no accepted request.

Expected statuses follow RFC 9110 / RFC 9112 (cited per case) and
docs/wsgi.md, docs/thrift.md. Most cases share one server per protocol
(module scope); tests that need options of their own or watch the process
start one with ``run_server``.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import resource
import shutil
import signal
import socket
import string
import struct
import sys
import textwrap
import threading
import time
import zlib

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TSocket, TTransport

from clients import TRACEBACK, Incomplete, Log, RawConnection, frame, header_frame, header_protocol, raw_exchange
from conftest import Server, fast_stop, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "thrift_echo"
sys.path.insert(0, str(EXAMPLE / "gen"))
from echo import Echo  # noqa: E402  (the example's generated code)

#: A log record's first line (docs/logging.md).


def _server_env() -> Optional[Dict[str, str]]:
    """The server runs in a temp dir: make a relative PYTHONPATH absolute."""
    path = os.environ.get("PYTHONPATH")
    if not path:
        return None
    return {"PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep) if p)}


SERVER_ENV = _server_env()

# --------------------------------------------------------------------------
# the WSGI app
# --------------------------------------------------------------------------

APP = r'''
import json
import logging
import os
import time

from urllib.parse import parse_qs

log = logging.getLogger("robustapp")


def touch(name, text="closed"):
    with open(name + ".tmp", "w") as f:
        f.write(text)
    os.replace(name + ".tmp", name)


def ok(start_response, body, extra=()):
    if isinstance(body, str):
        body = body.encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), *extra])
    return [body]


class Closing:
    """An iterable over `chunks` (sleeping `pause` between them) whose
    close() leaves a marker file."""

    def __init__(self, chunks, marker, pause=0.0, fail_next=False, fail_close=False):
        self.chunks, self.marker, self.pause = chunks, marker, pause
        self.fail_next, self.fail_close = fail_next, fail_close

    def __iter__(self):
        if self.fail_next:
            raise RuntimeError("raised-in-next")
        for c in self.chunks:
            yield c
            time.sleep(self.pause)

    def close(self):
        touch(self.marker)
        if self.fail_close:
            raise RuntimeError("raised-in-close")


class IterRaises:
    def __iter__(self):
        raise RuntimeError("raised-in-iter")


def fault(name, environ, start_response, q):
    marker = q.get("marker", "unused-marker")
    text = [("Content-Type", "text/plain")]
    if name == "status-bytes":
        start_response(b"200 OK", text)
    elif name == "status-no-code":
        start_response("OK", text)
    elif name == "status-crlf-injection":
        start_response("200 OK\r\nX-Injected: yes", text)
    elif name == "status-1xx":
        start_response("100 Continue", [])
        return []
    elif name == "status-too-low":
        start_response("099 Too Low", text)
    elif name == "headers-tuple":
        start_response("200 OK", (("Content-Type", "text/plain"),))
    elif name == "headers-dict":
        start_response("200 OK", {"Content-Type": "text/plain"})
    elif name == "header-not-a-pair":
        start_response("200 OK", [("Content-Type",)])
    elif name == "header-name-bytes":
        start_response("200 OK", [(b"X-A", "b")])
    elif name == "header-value-int":
        start_response("200 OK", [("X-A", 5)])
    elif name == "header-value-newline":
        start_response("200 OK", [("X-A", "a\nb")])
    elif name == "header-value-crlf-injection":
        start_response("200 OK", [("X-A", "a\r\nSet-Cookie: injected=1")])
    elif name == "header-value-nul":
        start_response("200 OK", [("X-A", "a\x00b")])
    elif name == "header-value-control-char":
        start_response("200 OK", [("X-A", "a\x01b")])
    elif name == "header-value-not-latin1":
        start_response("200 OK", [("X-A", "\u20ac")])
    elif name == "header-name-space":
        start_response("200 OK", [("X A", "b")])
    elif name == "header-name-colon":
        start_response("200 OK", [("X-A:", "b")])
    elif name == "content-length-invalid":
        start_response("200 OK", [("Content-Length", "abc")])
    elif name == "content-length-negative":
        start_response("200 OK", [("Content-Length", "-1")])
    elif name == "content-length-conflicting":
        start_response("200 OK", [("Content-Length", "3"), ("Content-Length", "4")])
    elif name == "body-longer-than-content-length":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"abc", b"HTTP/1.1 200 OK\r\nX-Smuggled: yes\r\n\r\n"]
    elif name == "return-none":
        start_response("200 OK", text)
        return None
    elif name == "return-int":
        start_response("200 OK", text)
        return 5
    elif name == "list-str":
        start_response("200 OK", text)
        return ["text"]
    elif name == "list-int":
        start_response("200 OK", text)
        return [b"ok", 5]
    elif name == "list-none":
        start_response("200 OK", text)
        return [None]
    elif name == "gen-str-first":
        start_response("200 OK", text)
        return (x for x in ["text"])
    elif name == "gen-none-after-first-chunk":
        start_response("200 OK", text)
        return Closing([b"first-chunk", None], marker, pause=0.1)
    elif name == "iter-raises":
        start_response("200 OK", text)
        return IterRaises()
    elif name == "next-and-close-raise":
        start_response("200 OK", text)
        return Closing([b"never"], marker, fail_next=True, fail_close=True)
    elif name == "write-str":
        write = start_response("200 OK", text)
        write("text")
    elif name == "no-start-response":
        return [b"body without a status"]
    elif name == "start-response-again-mid-body":
        start_response("200 OK", text)

        def gen():
            yield b"first-chunk"
            time.sleep(0.1)
            start_response("500 Internal Server Error", text)
            yield b"never"
        return gen()
    elif name == "system-exit":
        raise SystemExit(3)
    elif name == "keyboard-interrupt":
        raise KeyboardInterrupt()
    else:
        raise LookupError("no fault " + name)
    return [b"should not be sent"]


def make_app(app_config):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        if path == "/fast":
            return ok(start_response, "fast")
        if path == "/method":
            return ok(start_response, environ["REQUEST_METHOD"])
        if path == "/header":
            return ok(start_response, environ.get("HTTP_" + q["name"], "<absent>"))
        if path == "/echo":
            return ok(start_response, environ["wsgi.input"].read())
        if path == "/hash":
            n = 0
            while True:
                block = environ["wsgi.input"].read(65536)
                if not block:
                    break
                n += len(block)
            return ok(start_response, str(n))
        if path == "/count":
            keys = [k for k in environ if k.startswith("HTTP_")]
            return ok(start_response, json.dumps({"keys": len(keys), "a": len(environ.get("HTTP_A", ""))}))
        if path == "/hang":
            touch(q["marker"], "started")
            log.info("hang-start %s", q["marker"])
            time.sleep(600)
            return ok(start_response, "woke up")
        if path == "/slow-start":
            time.sleep(float(q.get("s", "1")))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing([b"late"], q["marker"])
        if path == "/drip":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return Closing([b"d" * 1000] * 1000, q["marker"], pause=0.05)
        if path == "/work":
            log.info("handled %s", q["id"])
            time.sleep(0.05)
            return ok(start_response, "done " + q["id"])
        if path.startswith("/fault/"):
            return fault(path[len("/fault/"):], environ, start_response, q)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"not found"]
    return app
'''

HTTP_INI = """\
[server:main]
factory = baseplate.server.wsgi
header_timeout = 2 seconds
max_body_size = 100000
# the tests of 10,000 header fields; the default (100) has its own test
max_header_count = 20000

[app:main]
factory = app:make_app
"""

#: header_timeout of the shared HTTP server, seconds.
HEADER_TIMEOUT = 2.0
MAX_BODY = 100000

# --------------------------------------------------------------------------
# a raw HTTP client
# --------------------------------------------------------------------------


def get(path: str, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"GET {path} {version}\r\nHost: test\r\n{extra}\r\n".encode("latin-1")


def assert_serving(port: int) -> None:
    """A normal request on a new connection is answered at once."""
    start = time.monotonic()
    resp = raw_exchange(port, get("/fast"))
    assert (resp.status, resp.body) == (200, b"fast")
    assert time.monotonic() - start < 5


def wait_for_file(path: Path, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def start_server(cwd: Path, ini: str, app: Optional[str] = APP) -> Server:
    if app:
        (cwd / "app.py").write_text(textwrap.dedent(app))
    (cwd / "app.ini").write_text(fast_stop(ini))
    port = free_port()
    srv = Server(["--bind", f"127.0.0.1:{port}", "app.ini"], cwd, SERVER_ENV, port)
    try:
        srv.wait_listening()
    except BaseException:
        srv.kill()
        raise
    return srv


@pytest.fixture(scope="module")
def http_server(tmp_path_factory) -> Iterator[Server]:
    srv = None
    try:
        srv = start_server(tmp_path_factory.mktemp("robust_http"), HTTP_INI)
        yield srv
        assert srv.stop() == 0, srv.stdout + srv.stderr
    finally:
        if srv:
            srv.kill()


# --------------------------------------------------------------------------
# hostile requests: one parametrized case per input
# --------------------------------------------------------------------------

CLOSED = "closed"  # no response at all; the server closes the connection


@dataclass
class Case:
    raw: bytes
    #: The status of the (first) response, or CLOSED.
    expect: object
    #: The body a 2xx response must carry, when it matters.
    body: Optional[bytes] = None
    #: How long the server may take to answer or close.
    within: float = 5.0
    #: Half-close after sending (a client that ends early).
    shutdown: bool = False


def post(headers: str, body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    return f"POST /echo {version}\r\nHost: test\r\n{headers}\r\n".encode("latin-1") + body


CHUNKED = "Transfer-Encoding: chunked\r\n"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"

#: The status each hostile request must get. RFC sections: 9110 = HTTP
#: semantics, 9112 = HTTP/1.1.
CASES: Dict[str, Case] = {
    # -- request smuggling: message framing (RFC 9112 6.1, 6.3)
    "cl-then-te": Case(post("Content-Length: 5\r\n" + CHUNKED, HELLO_CHUNKED), 400),
    "te-then-cl": Case(post(CHUNKED + "Content-Length: 5\r\n", HELLO_CHUNKED), 400),
    "cl-list-conflicting": Case(post("Content-Length: 5, 6\r\n", b"hello!"), 400),
    "cl-plus-sign": Case(post("Content-Length: +5\r\n", b"hello"), 400),
    "cl-minus-sign": Case(post("Content-Length: -5\r\n", b"hello"), 400),
    "cl-space-inside": Case(post("Content-Length: 1 0\r\n", b"hellohello"), 400),
    "cl-hex": Case(post("Content-Length: 0x5\r\n", b"hello"), 400),
    "cl-empty": Case(post("Content-Length: \r\n", b"hello"), 400),
    "cl-overflows-64-bits": Case(post("Content-Length: 18446744073709551616\r\n", b"hello"), 400),
    "cl-max-64-bits-over-body-limit": Case(post("Content-Length: 18446744073709551615\r\n", b"hello"), 413),
    "cl-obs-fold": Case(post("Content-Length: 5\r\n 5\r\n", b"hello"), 400),
    "chunk-size-negative": Case(post(CHUNKED, b"-1\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-0x-prefix": Case(post(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-leading-space": Case(post(CHUNKED, b" 5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-not-hex": Case(post(CHUNKED, b"5g\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-overflows-64-bits": Case(post(CHUNKED, b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk-size-max-64-bits-over-body-limit": Case(post(CHUNKED, b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), 413),
    "chunk-over-body-limit-declared": Case(post(CHUNKED, f"{MAX_BODY + 1:x}\r\n".encode() + b"x" * 10), 413),
    "chunk-data-without-crlf": Case(post(CHUNKED, b"5\r\nhelloXX0\r\n\r\n"), 400),
    "chunk-data-longer-than-size": Case(post(CHUNKED, b"3\r\nhello\r\n0\r\n\r\n"), 400),
    "trailer-without-colon": Case(post(CHUNKED, b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"), 400),
    "trailer-with-control-char": Case(post(CHUNKED, b"5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n"), 400),
    "te-chunked-chunked": Case(post("Transfer-Encoding: chunked, chunked\r\n", HELLO_CHUNKED), 400),
    "te-chunked-twice": Case(post(CHUNKED + CHUNKED, HELLO_CHUNKED), 400),
    "te-identity": Case(post("Transfer-Encoding: identity\r\n", b"hello"), 400),
    "te-chunked-not-last": Case(post("Transfer-Encoding: chunked, gzip\r\n", HELLO_CHUNKED), 400),
    "te-xchunked": Case(post("Transfer-Encoding: xchunked\r\n", HELLO_CHUNKED), 400),
    "te-space-before-colon": Case(post("Transfer-Encoding : chunked\r\n", HELLO_CHUNKED), 400),
    "te-vertical-tab": Case(post("Transfer-Encoding: \x0bchunked\r\n", HELLO_CHUNKED), 400),
    # RFC 9112 6.1: a transfer coding the server does not understand: 501.
    "te-identity-then-chunked": Case(post("Transfer-Encoding: identity, chunked\r\n", HELLO_CHUNKED), 501),
    "te-gzip-then-chunked": Case(post("Transfer-Encoding: gzip, chunked\r\n", HELLO_CHUNKED), 501),
    "te-unknown-folded-in": Case(post("Transfer-Encoding: gzip,\r\n chunked\r\n", HELLO_CHUNKED), 501),
    # -- obsolete line folding (RFC 9112 5.2: reject, or replace with SP)
    "obs-fold-value": Case(get("/header?name=X_A", "X-A: one\r\n two\r\n"), 200, body=b"one two"),
    "obs-fold-before-first-field": Case(b"GET /fast HTTP/1.1\r\n X-A: one\r\nHost: test\r\n\r\n", 400),
    # -- request line: method (RFC 9112 3.1, RFC 9110 9.1: a case-sensitive token)
    "method-empty": Case(b" /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "method-control-char": Case(b"GE\x01T /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "method-nul": Case(b"GET\x00 /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "method-separator": Case(b"GE(T /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "method-8-bit": Case(b"G\xc3\x89T /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "method-lowercase-is-legal": Case(b"get /method HTTP/1.1\r\nHost: test\r\n\r\n", 200, body=b"get"),
    "request-line-two-spaces": Case(b"GET  /fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    # -- request line: target (RFC 9112 3.2; invalid: 400, RFC 9112 3)
    "target-space": Case(b"GET /a b HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-control-char": Case(b"GET /a\x01b HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-nul": Case(b"GET /a\x00b HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-del": Case(b"GET /a\x7fb HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-not-origin-form": Case(b"GET fast HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-asterisk-with-get": Case(b"GET * HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    # RFC 9110 4.2.1: an http URI with an empty host MUST be rejected.
    "target-absolute-empty-host": Case(b"GET http:// HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    "target-absolute-garbage": Case(b"GET http://[::1/%zz HTTP/1.1\r\nHost: test\r\n\r\n", 400),
    # -- request line: version (RFC 9112 2.3, RFC 9110 6.2 and 15.6.6)
    "version-2.0": Case(b"GET /fast HTTP/2.0\r\nHost: test\r\n\r\n", 505),
    # RFC 9110 section 2.5: a higher minor version is served as HTTP/1.1.
    "version-1.2-is-served-as-1.1": Case(b"GET /fast HTTP/1.2\r\nHost: test\r\n\r\n", 200, body=b"fast"),
    "version-1.9-is-served-as-1.1": Case(b"GET /fast HTTP/1.9\r\nHost: test\r\n\r\n", 200, body=b"fast"),
    "version-0.9": Case(b"GET /fast HTTP/0.9\r\nHost: test\r\n\r\n", 505),
    "version-leading-zero": Case(b"GET /fast HTTP/01.1\r\nHost: test\r\n\r\n", 400),
    "version-lowercase": Case(b"GET /fast http/1.1\r\nHost: test\r\n\r\n", 400),
    "version-missing": Case(b"GET /fast\r\nHost: test\r\n\r\n", 400),
    # -- header fields (RFC 9112 5, RFC 9110 5.5 / 5.6.2)
    "field-name-nul": Case(get("/fast", "X-A\x00: b\r\n"), 400),
    "field-name-control-char": Case(get("/fast", "X\x01A: b\r\n"), 400),
    "field-name-space-inside": Case(get("/fast", "X A: b\r\n"), 400),
    "field-name-tab-before-colon": Case(get("/fast", "X-A\t: b\r\n"), 400),
    "field-name-space-before-colon": Case(get("/fast", "X-A : b\r\n"), 400),
    "field-name-empty": Case(get("/fast", ": b\r\n"), 400),
    "field-name-8-bit": Case(get("/fast", "X\xe9: b\r\n"), 400),
    "field-value-nul": Case(get("/fast", "X-A: b\x00c\r\n"), 400),
    "field-value-control-char": Case(get("/fast", "X-A: b\x01c\r\n"), 400),
    "field-value-del": Case(get("/fast", "X-A: b\x7fc\r\n"), 400),
    "field-value-escape": Case(get("/fast", "X-A: b\x1bc\r\n"), 400),
    "field-value-bare-cr": Case(get("/fast", "X-A: b\rc\r\n"), 400),
    "host-nul": Case(b"GET /fast HTTP/1.1\r\nHost: te\x00st\r\n\r\n", 400),
    # RFC 9112 3.2: a Host with an invalid value MUST get 400.
    "host-with-space": Case(b"GET /fast HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "host-with-slash-and-at": Case(b"GET /fast HTTP/1.1\r\nHost: a/b@c\r\n\r\n", 400),
    "expect-unknown": Case(get("/fast", "Expect: 200-ok\r\n"), 417),
    # -- line endings (RFC 9112 2.2)
    "bare-lf-everywhere": Case(b"GET /fast HTTP/1.1\nHost: test\n\n", 400),
    "bare-lf-in-a-field-line": Case(b"GET /fast HTTP/1.1\r\nHost: test\nX-A: b\r\n\r\n", 400),
    "bare-cr-line-endings": Case(b"GET /fast HTTP/1.1\rHost: test\r\r", 400),
    # RFC 9112 section 2.2: a bare LF may be rejected; it is, at once,
    # however the bytes arrive (Beast alone would wait for a CRLFCRLF).
    "bare-lf-ends-the-header": Case(b"GET /fast HTTP/1.1\r\nHost: test\r\n\n", 400),
    # SHOULD ignore at least one empty line before the request line.
    "empty-line-before-request-line": Case(b"\r\nGET /fast HTTP/1.1\r\nHost: test\r\n\r\n", 200, body=b"fast"),
    # -- limits
    "body-over-limit-with-expect-100-continue": Case(
        post(f"Content-Length: {MAX_BODY + 1}\r\nExpect: 100-continue\r\n"), 413
    ),
    # -- requests that end early (RFC 9112 8: the server closes)
    "ends-in-the-request-line": Case(b"GET /fast HTT", CLOSED, shutdown=True),
    "ends-in-a-field": Case(b"GET /fast HTTP/1.1\r\nHost: te", CLOSED, shutdown=True),
    "ends-in-a-content-length-body": Case(post("Content-Length: 50\r\n", b"0123456789"), CLOSED, shutdown=True),
    "ends-in-a-chunk": Case(post(CHUNKED, b"5\r\nhel"), CLOSED, shutdown=True),
    "ends-in-a-chunk-size": Case(post(CHUNKED, b"5\r\nhello\r\n1"), CLOSED, shutdown=True),
    "ends-before-the-body": Case(post("Content-Length: 5\r\n"), CLOSED, shutdown=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request(http_server, name):
    case = CASES[name]
    with RawConnection(http_server.port) as c:
        c.send(case.raw)
        if case.shutdown:
            c.sock.shutdown(socket.SHUT_WR)
        if case.expect == CLOSED:
            closed, got = c.wait_closed(case.within)
            assert closed, f"connection still open after {case.within}s"
            assert got == b"", f"expected no answer, got {got[:200]!r}"
        else:
            c.sock.settimeout(case.within)
            resp = c.read_final_response()
            assert resp.status == case.expect, resp
            if case.body is not None:
                assert resp.body == case.body
            if resp.status >= 400:
                assert "close" in (resp.header("connection") or "").lower()
                assert c.closed_by_peer(), "connection left open after an error"
    assert_serving(http_server.port)


# -- pipelining: a valid request, then something else on the same connection

PIPELINED: Dict[str, Tuple[bytes, Tuple[int, ...]]] = {
    "garbage": (b"GARBAGE\r\n\r\n", (400,)),
    "binary-junk": (b"\x00\x01\x02\xff\xfe\r\n\r\n", (400,)),
    "smuggled-cl-te": (
        post("Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\nGET /fast HTTP/1.1\r\nHost: test\r\n\r\n"),
        (400,),
    ),
    # RFC 9113 3.4: the HTTP/2 preface is made to fail on HTTP/1.1 servers,
    # as a bad request or an unsupported version.
    "http2-preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 505)),
    "nul-in-field": (get("/fast", "X-A: \x00\r\n"), (400,)),
}


@pytest.mark.parametrize("name", list(PIPELINED))
def test_pipelined_garbage_after_a_valid_request(http_server, name):
    raw, statuses = PIPELINED[name]
    with RawConnection(http_server.port) as c:
        c.send(get("/fast") + raw)
        first = c.read_response()
        assert (first.status, first.body) == (200, b"fast")
        second = c.read_response()
        assert second.status in statuses, second
        assert c.closed_by_peer()
    assert_serving(http_server.port)


def test_transfer_encoding_in_http10_closes_after_the_request(http_server):
    # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    # framing; the connection is closed after it, so nothing pipelined
    # behind it can be smuggled.
    with RawConnection(http_server.port) as c:
        c.send(post(CHUNKED, HELLO_CHUNKED, version="HTTP/1.0") + get("/fast"))
        first = c.read_response()
        assert first.status in (200, 400), first
        assert c.closed_by_peer(), "a request pipelined after HTTP/1.0 + Transfer-Encoding was read"
    assert_serving(http_server.port)


# -- sizes


def test_ten_thousand_tiny_headers_within_the_limit(http_server):
    names = ["".join(p) for p in itertools.product(string.ascii_lowercase + string.digits, repeat=3)][:10000]
    head = "".join(f"{n}:\r\n" for n in names)
    raw = b"GET /count HTTP/1.1\r\nHost: t\r\n" + head.encode() + b"\r\n"
    assert len(raw) < 65536
    start = time.monotonic()
    resp = raw_exchange(http_server.port, raw)
    assert resp.status == 200
    assert json.loads(resp.body) == {"keys": 10001, "a": 0}
    assert time.monotonic() - start < 10
    assert_serving(http_server.port)


def test_ten_thousand_repeats_of_one_header(http_server):
    raw = b"GET /count HTTP/1.1\r\nHost: t\r\n" + b"a:b\r\n" * 10000 + b"\r\n"
    start = time.monotonic()
    resp = raw_exchange(http_server.port, raw)
    assert resp.status == 200
    # repeated fields are joined with ", " (docs/wsgi.md)
    assert json.loads(resp.body) == {"keys": 2, "a": 10000 * 3 - 2}
    assert time.monotonic() - start < 10
    assert_serving(http_server.port)


def test_many_small_headers_over_the_limit_is_431(http_server):
    # 120,000 bytes of short header fields, nearly twice max_header_size
    # (65536), in two writes as a client's TCP segments may bring them: the
    # limit counts the whole header section, however it arrives.
    with RawConnection(http_server.port) as c:
        c.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n" + b"a:b\r\n" * 12000)
        time.sleep(0.3)
        c.send(b"a:b\r\n" * 12000 + b"\r\n")
        assert c.read_response().status == 431
        assert c.closed_by_peer()
    assert_serving(http_server.port)


def test_very_long_request_target_is_414(http_server):
    # RFC 9112 3: a request-target longer than the server wishes to parse
    # MUST be answered 414 (URI Too Long); 431 is for header fields.
    with RawConnection(http_server.port) as c:
        c.send(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response().status == 414
        assert c.closed_by_peer()
    assert_serving(http_server.port)


def test_higher_minor_http_version_is_served_as_http11(http_server):
    # RFC 9110 section 2.5: a server answers with the highest minor version it
    # supports (1.1), keep-alive semantics included.
    for version in ("HTTP/1.2", "HTTP/1.9"):
        with RawConnection(http_server.port) as c:
            c.send(get("/fast", version=version) + get("/method", version=version))
            first, second = c.read_response(), c.read_response()
            assert (first.version, first.status, first.body) == ("HTTP/1.1", 200, b"fast")
            assert (second.version, second.status, second.body) == ("HTTP/1.1", 200, b"GET")
    assert_serving(http_server.port)


def test_request_line_and_header_count_limits_at_their_defaults(run_server):
    # max_request_line (8192) and max_header_count (100) unset: the defaults.
    server = run_server(APP, env=SERVER_ENV)
    line_overhead = len("GET  HTTP/1.1")
    at_limit = "/fast?" + "a" * (8192 - line_overhead - len("/fast?"))
    resp = raw_exchange(server.port, get(at_limit))
    assert (resp.status, resp.body) == (200, b"fast")
    with RawConnection(server.port) as c:
        c.send(get(at_limit + "a"))
        resp = c.read_response()
        assert resp.status == 414 and "close" in resp.header("connection").lower()
        assert c.closed_by_peer()
    # a request line still arriving is cut as soon as it is too long
    with RawConnection(server.port) as c:
        c.send(b"GET /" + b"a" * 9000)
        assert c.read_response().status == 414
        assert c.closed_by_peer()
    hundred = "".join(f"X-{i}: v\r\n" for i in range(99))  # and Host
    resp = raw_exchange(server.port, get("/fast", hundred))
    assert (resp.status, resp.body) == (200, b"fast")
    with RawConnection(server.port) as c:
        c.send(get("/fast", hundred + "X-One-Too-Many: v\r\n"))
        resp = c.read_response()
        assert resp.status == 431 and "close" in resp.header("connection").lower()
        assert c.closed_by_peer()
    assert_serving(server.port)


def test_request_line_and_header_count_limits_from_server_options(run_server):
    server = run_server(APP, server_options="max_request_line = 40\nmax_header_count = 3\n", env=SERVER_ENV)
    assert raw_exchange(server.port, get("/fast?" + "a" * 21)).status == 200  # 40 bytes with "GET " and version
    assert raw_exchange(server.port, get("/fast?" + "a" * 22)).status == 414
    assert raw_exchange(server.port, get("/fast", "A: 1\r\nB: 2\r\n")).status == 200
    assert raw_exchange(server.port, get("/fast", "A: 1\r\nB: 2\r\nC: 3\r\n")).status == 431
    assert_serving(server.port)
    off = run_server(APP, server_options="max_request_line = 0\nmax_header_count = 0\n", env=SERVER_ENV)
    assert raw_exchange(off.port, get("/fast?" + "a" * 20000)).status == 200  # only max_header_size
    assert raw_exchange(off.port, get("/fast", "".join(f"X-{i}: v\r\n" for i in range(500)))).status == 200


SLOW_APP = r'''
import os
import time


def make_app(app_config):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            while not os.path.exists("release"):
                time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    return app
'''


@pytest.mark.parametrize("dispatch", ["threads", "gevent"])
def test_max_pending_requests_sheds_load_with_503(run_server, tmp_path, dispatch):
    # Two requests pending (with threads: one running, one queued for the
    # single worker; with gevent: both on the blocked hub): a third is
    # refused at once with 503 and its connection closed; when they finish,
    # the server serves again.
    server = run_server(
        SLOW_APP,
        server_options=f"max_pending_requests = 2\ndispatch = {dispatch}\npython_threads = 1\n",
        env=SERVER_ENV,
    )
    held = [RawConnection(server.port), RawConnection(server.port)]
    try:
        for c in held:
            c.send(get("/block"))
        time.sleep(0.5)
        start = time.monotonic()
        with RawConnection(server.port) as c:
            c.send(get("/fast"))
            resp = c.read_response()
            assert resp.status == 503, resp
            assert "close" in resp.header("connection").lower()
            assert c.closed_by_peer()
        assert time.monotonic() - start < 5
        (tmp_path / "release").write_text("")
        for c in held:
            resp = c.read_response()
            assert (resp.status, resp.body) == (200, b"ok")
    finally:
        for c in held:
            c.close()
    resp = raw_exchange(server.port, get("/fast"))
    assert (resp.status, resp.body) == (200, b"ok")


SLOW_ECHO_APP = r'''
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from echo import Echo  # noqa: E402


class Handler:
    def echo(self, message):
        if message == "block":
            while not os.path.exists("release"):
                time.sleep(0.02)
        return message


def make_processor(app_config):
    return Echo.Processor(Handler())
'''


@pytest.mark.parametrize("kind", ["header", "framed", "unframed_compact"])
def test_max_pending_requests_sheds_thrift_calls_with_an_application_exception(run_server, tmp_path, kind):
    from thrift.Thrift import TApplicationException

    shutil.copytree(EXAMPLE / "gen", tmp_path / "gen")
    (tmp_path / "slow_echo.py").write_text(SLOW_ECHO_APP)
    ini = (
        "[server:main]\nfactory = baseplate.server.thrift\nmax_pending_requests = 2\n"
        "dispatch = threads\npython_threads = 4\n\n[app:main]\nfactory = slow_echo:make_processor\n"
    )
    server = run_server(ini=ini, env=SERVER_ENV)
    held = [ThriftClient(server.port, kind) for _ in range(2)]
    results: List[str] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.echo.echo("block"))) for c in held]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        third = ThriftClient(server.port, kind)
        try:
            with pytest.raises(TApplicationException) as err:
                third.echo.echo("hi")
            assert err.value.type == TApplicationException.INTERNAL_ERROR
            assert "max_pending_requests" in err.value.message
            (tmp_path / "release").write_text("")
            for t in threads:
                t.join(30)
            assert results == ["block", "block"]
            # the refused call's connection stays usable
            assert third.echo.echo("again") == "again"
        finally:
            third.close()
    finally:
        (tmp_path / "release").write_text("")
        for c in held:
            c.close()


def test_truncated_upload_past_the_preread_is_not_answered_2xx(http_server):
    # The app is called before the body is all there (body_preread is 64 KiB)
    # and reads it; the client stops halfway: the app must see an error, not
    # a short body, so no 2xx goes back.
    with RawConnection(http_server.port) as c:
        c.send(post("Content-Length: 90000\r\n").replace(b"/echo", b"/hash") + b"x" * 70000)
        c.sock.shutdown(socket.SHUT_WR)
        closed, got = c.wait_closed(10)
        assert closed
        assert not re.match(rb"HTTP/1\.\d 2", got), got[:200]
    assert_serving(http_server.port)


# -- slow and idle clients


def test_slowloris_is_cut_off_at_header_timeout_while_others_are_served(http_server):
    raw = b"GET /fast HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 200
    served: List[float] = []
    with RawConnection(http_server.port) as c:
        start = time.monotonic()
        closed_after = None
        for i in range(len(raw)):
            if not c.send(raw[i : i + 1]):
                closed_after = time.monotonic() - start
                break
            closed, got = c.wait_closed(0.5)
            assert got == b"", got
            if closed:
                closed_after = time.monotonic() - start
                break
            t = time.monotonic()
            assert_serving(http_server.port)
            served.append(time.monotonic() - t)
            if time.monotonic() - start > HEADER_TIMEOUT + 10:
                break
    assert closed_after is not None, "the slow header was never cut off"
    # the sweep runs once a second: within about a second of header_timeout
    assert HEADER_TIMEOUT - 0.5 <= closed_after <= HEADER_TIMEOUT + 4, closed_after
    assert served and max(served) < 1.0, served
    assert_serving(http_server.port)


def test_silent_connection_is_closed_after_header_timeout(http_server):
    with RawConnection(http_server.port) as idle:
        start = time.monotonic()
        # meanwhile others are served
        for _ in range(3):
            assert_serving(http_server.port)
        closed, got = idle.wait_closed(HEADER_TIMEOUT + 6)
        elapsed = time.monotonic() - start
    assert closed and got == b""
    assert HEADER_TIMEOUT - 0.5 <= elapsed <= HEADER_TIMEOUT + 4, elapsed
    assert_serving(http_server.port)


# --------------------------------------------------------------------------
# faulty WSGI apps (beyond tests/python/test_wsgi.py's exception tests)
# --------------------------------------------------------------------------

#: Faults found before anything was sent: the client gets 500 (docs/wsgi.md).
FAULTS_500 = [
    "status-bytes",
    "status-no-code",
    "status-too-low",
    "status-crlf-injection",
    # A 1xx is interim (RFC 9110 15.2): as the only response, the client
    # waits for a final one forever.
    "status-1xx",
    "headers-tuple",
    "headers-dict",
    "header-not-a-pair",
    "header-name-bytes",
    "header-value-int",
    "header-value-newline",
    "header-value-crlf-injection",
    "header-value-nul",
    # RFC 9110 5.5: field values are VCHAR / obs-text / SP / HTAB only.
    "header-value-control-char",
    "header-value-not-latin1",
    "header-name-space",
    "header-name-colon",
    "content-length-invalid",
    "content-length-negative",
    "content-length-conflicting",
    "return-none",
    "return-int",
    "list-str",
    "list-int",
    "list-none",
    "gen-str-first",
    "iter-raises",
    "write-str",
    "no-start-response",
    "system-exit",
    "keyboard-interrupt",
]


@pytest.mark.parametrize("fault", FAULTS_500)
def test_app_fault_before_the_head_is_500(http_server, fault):
    log = Log(http_server)
    with RawConnection(http_server.port) as c:
        c.send(get(f"/fault/{fault}"))
        c.sock.settimeout(5)
        resp = c.read_final_response()
        assert resp.status == 500, resp
        assert resp.body == b"Internal Server Error\n"
        names = {k for k, _ in resp.headers}
        assert not names & {"x-injected", "set-cookie", "x-a"}, resp.headers
    log.wait_for(r"ERROR")
    assert_serving(http_server.port)


def test_app_faults_with_threads_dispatch_keep_every_worker(run_server):
    # With dispatch = threads a fault must not cost a worker thread: after
    # more faults than there are workers, requests are still answered.
    server = run_server(APP, server_options="dispatch = threads\npython_threads = 2\n")
    statuses = []
    for fault in ["return-none", "list-str", "no-start-response"] * 2:
        with RawConnection(server.port, timeout=3) as c:
            c.send(get(f"/fault/{fault}"))
            try:
                statuses.append(c.read_response().status)
            except Incomplete:
                statuses.append("closed without a response")
            except socket.timeout:
                statuses.append("no answer within 3 s")
    try:
        assert_serving(server.port)
        serving = "served"
    except (socket.timeout, Incomplete) as exc:
        serving = f"a normal request then failed: {exc!r}"
    assert (statuses, serving) == ([500] * 6, "served")
    assert server.stop() == 0


@pytest.mark.parametrize("fault", ["gen-none-after-first-chunk", "start-response-again-mid-body"])
def test_app_fault_after_the_head_closes_the_connection(http_server, fault):
    marker = f"marker-{fault}"
    log = Log(http_server)
    with RawConnection(http_server.port) as c:
        c.send(get(f"/fault/{fault}?marker={marker}") + get("/fast"))
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head.lower()
        rest = c.read_to_eof()
    assert b"first-chunk" in rest
    assert not rest.endswith(b"0\r\n\r\n"), "a failed response must not look complete"
    assert b"HTTP/1.1" not in rest, "the pipelined request was answered after a broken response"
    if fault == "gen-none-after-first-chunk":
        assert wait_for_file(http_server.cwd / marker, timeout=5) == "closed", "the iterable's close() was not called"
    log.wait_for(r"ERROR")
    assert_serving(http_server.port)


def test_app_body_longer_than_its_content_length_is_cut(http_server):
    with RawConnection(http_server.port) as c:
        c.send(get("/fault/body-longer-than-content-length") + get("/fast"))
        resp = c.read_response()
        assert (resp.status, resp.body) == (200, b"abc")
        # the excess (a whole fake response) is never sent, and the
        # connection ends so the client cannot mistake it for one
        assert c.closed_by_peer()
    assert_serving(http_server.port)


def test_next_and_close_both_raising(http_server):
    marker = "marker-next-and-close"
    log = Log(http_server)
    resp = raw_exchange(http_server.port, get(f"/fault/next-and-close-raise?marker={marker}"))
    assert resp.status == 500
    assert wait_for_file(http_server.cwd / marker) == "closed"
    log.wait_for(r"RuntimeError: raised-in-next")
    log.wait_for(r"RuntimeError: raised-in-close")
    assert_serving(http_server.port)


def test_client_gone_before_the_app_answers_close_is_called(http_server):
    marker = "marker-gone-before-head"
    with RawConnection(http_server.port) as c:
        c.send(get(f"/slow-start?s=0.5&marker={marker}"))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert wait_for_file(http_server.cwd / marker) == "closed"
    assert_serving(http_server.port)


def test_client_gone_during_a_slow_generator_close_is_called(http_server):
    marker = "marker-gone-mid-drip"
    with RawConnection(http_server.port) as c:
        c.send(get(f"/drip?marker={marker}"))
        c.read_until(b"\r\n\r\n")
        c.read_exact(2000)
    start = time.monotonic()
    assert wait_for_file(http_server.cwd / marker) == "closed"
    # the generator is stopped at its next write, not after its 50 s
    assert time.monotonic() - start < 10
    assert_serving(http_server.port)


def test_hanging_app_does_not_stop_others(http_server):
    markers = [f"marker-hang-{i}" for i in range(2)]
    hung = [RawConnection(http_server.port) for _ in markers]
    try:
        for c, m in zip(hung, markers):
            c.send(get(f"/hang?marker={m}"))
        for m in markers:
            assert wait_for_file(http_server.cwd / m) == "started"
        # the core puts no time limit on an app: the requests stay open...
        for c in hung:
            closed, got = c.wait_closed(0.2)
            assert not closed and got == b""
        # ...and the server goes on serving everyone else
        start = time.monotonic()
        for _ in range(20):
            assert_serving(http_server.port)
        assert time.monotonic() - start < 10
    finally:
        for c in hung:
            c.close()
    assert_serving(http_server.port)


# --------------------------------------------------------------------------
# Thrift
# --------------------------------------------------------------------------

THRIFT_INI = """\
[server:main]
factory = baseplate.server.thrift
stop_timeout = 10 seconds
io_timeout = 2 seconds

[app:main]
factory = echo_app:make_processor
"""
IO_TIMEOUT = 2.0
CLOSING = "closing Thrift connection from"


@pytest.fixture(scope="module")
def thrift_server(tmp_path_factory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("robust_thrift")
    shutil.copy(EXAMPLE / "echo_app.py", cwd / "echo_app.py")
    shutil.copytree(EXAMPLE / "gen", cwd / "gen")
    srv = None
    try:
        srv = start_server(cwd, THRIFT_INI, app=None)
        yield srv
        assert srv.stop() == 0, srv.stdout + srv.stderr
    finally:
        if srv:
            srv.kill()


THRIFT_KINDS: Dict[str, Callable] = {
    "header": header_protocol(False),
    "framed": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(t)),
    "unframed": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(t)),
    "unframed_compact": lambda t: TCompactProtocol.TCompactProtocol(TTransport.TBufferedTransport(t)),
}


class ThriftClient:
    def __init__(self, port: int, kind: str) -> None:
        self.sock = TSocket.TSocket("127.0.0.1", port)
        self.sock.setTimeout(30_000)
        self.prot = THRIFT_KINDS[kind](self.sock)
        self.echo = Echo.Client(self.prot)
        self.prot.trans.open()

    def close(self) -> None:
        self.prot.trans.close()
        self.sock.close()


def echo_call(kind: str, message: str = "hi") -> bytes:
    mem = TTransport.TMemoryBuffer()
    prot = THRIFT_KINDS[kind](mem)
    prot.writeMessageBegin("echo", TMessageType.CALL, 1)
    Echo.echo_args(message=message).write(prot)
    prot.writeMessageEnd()
    prot.trans.flush()
    return mem.getvalue()


#: The start of a strict binary call to "echo", seqid 1: what comes after is the args struct.
BINARY_CALL = b"\x80\x01\x00\x01" + struct.pack(">i", 4) + b"echo" + struct.pack(">i", 1)
COMPACT_CALL = b"\x82\x21\x01\x04echo"


def nested_binary(depth: int) -> bytes:
    """Struct field 1 holding a struct, `depth` times, then the STOPs."""
    return b"\x0c\x00\x01" * depth + b"\x00" * (depth + 1)


def nested_compact(depth: int) -> bytes:
    return b"\x1c" * depth + b"\x00" * (depth + 1)


@dataclass
class ThriftCase:
    raw: bytes
    #: "warning": closed at once with one WARNING line naming the peer.
    #: "closed": closed at once (what is logged is not checked).
    #: "timeout": the message never completes; closed by io_timeout.
    expect: str


THRIFT_CASES: Dict[str, ThriftCase] = {
    # truncated frames, the client then silent: io_timeout closes them
    "framed-truncated-then-silent": ThriftCase(frame(BINARY_CALL + b"\x0b\x00\x01")[:-2], "timeout"),
    "header-truncated-then-silent": ThriftCase(header_frame(BINARY_CALL)[:12], "timeout"),
    "unframed-truncated-then-silent": ThriftCase(BINARY_CALL + b"\x0b\x00\x01\x00\x00\x00\x10abc", "timeout"),
    # huge declared sizes
    "frame-just-over-max-frame-size": ThriftCase(struct.pack(">I", 16 * 1024 * 1024 + 1) + BINARY_CALL, "warning"),
    "header-length-past-the-frame": ThriftCase(
        frame(b"\x0f\xff\x00\x00\x00\x00\x00\x01\xff\xff" + b"\x00" * 8), "warning"
    ),
    "header-info-string-huge": ThriftCase(
        header_frame(BINARY_CALL + b"\x00", info=b"\x01\x01\xff\xff\xff\xff\x0f"), "warning"
    ),
    "framed-string-2gib-in-a-small-frame": ThriftCase(
        frame(BINARY_CALL + b"\x0b\x00\x01\x7f\xff\xff\xff" + b"\x00"), "warning"
    ),
    # a declared size over max_frame_size can never complete: closed at once
    "unframed-list-2g-elements": ThriftCase(BINARY_CALL + b"\x0f\x00\x02\x08\x7f\xff\xff\xff", "warning"),
    # garbage after a valid header
    "header-then-garbage": ThriftCase(header_frame(b"\xde\xad\xbe\xef" * 8), "warning"),
    "framed-magic-then-garbage": ThriftCase(frame(b"\x80\x01\x00\x01" + b"\xff" * 24), "warning"),
    "unframed-compact-then-garbage": ThriftCase(COMPACT_CALL + b"\xff" * 8, "warning"),
    # unknown THeader transforms (only zlib, 1, is supported)
    "header-transform-2": ThriftCase(header_frame(BINARY_CALL + b"\x00", transforms=(2,)), "warning"),
    "header-transform-99": ThriftCase(header_frame(BINARY_CALL + b"\x00", transforms=(99,)), "warning"),
    "header-transforms-zlib-and-2": ThriftCase(header_frame(BINARY_CALL + b"\x00", transforms=(1, 2)), "warning"),
    # 10,000 levels of nested structs
    "unframed-binary-nested-10000": ThriftCase(BINARY_CALL + nested_binary(10000), "closed"),
    "unframed-compact-nested-10000": ThriftCase(COMPACT_CALL + nested_compact(10000), "closed"),
    "framed-binary-nested-10000": ThriftCase(frame(BINARY_CALL + nested_binary(10000)), "closed"),
    "header-binary-nested-10000": ThriftCase(header_frame(BINARY_CALL + nested_binary(10000)), "closed"),
    # negative sizes
    "unframed-negative-name-size": ThriftCase(b"\x80\x01\x00\x01\xff\xff\xff\xff" + b"\x00" * 20, "warning"),
    "unframed-negative-string-size": ThriftCase(BINARY_CALL + b"\x0b\x00\x01\xff\xff\xff\xfe\x00", "warning"),
    "unframed-negative-list-size": ThriftCase(BINARY_CALL + b"\x0f\x00\x02\x08\xff\xff\xff\xfe\x00", "warning"),
    "framed-negative-name-size": ThriftCase(frame(b"\x80\x01\x00\x01\xff\xff\xff\xff" + b"\x00" * 20), "warning"),
    "framed-negative-string-size": ThriftCase(frame(BINARY_CALL + b"\x0b\x00\x01\xff\xff\xff\xfe\x00"), "warning"),
    "header-negative-string-size": ThriftCase(
        header_frame(BINARY_CALL + b"\x0b\x00\x01\xff\xff\xff\xfe\x00"), "warning"
    ),
}


@pytest.mark.parametrize("name", list(THRIFT_CASES))
def test_hostile_thrift_message(thrift_server, name):
    case = THRIFT_CASES[name]
    log = Log(thrift_server)
    good = ThriftClient(thrift_server.port, "framed")
    good2 = ThriftClient(thrift_server.port, "header")
    try:
        assert good.echo.echo("before") == "before"
        with RawConnection(thrift_server.port) as bad:
            bad_port = bad.local_port
            start = time.monotonic()
            bad.send(case.raw)
            # others are unaffected while the bad connection is open
            assert good2.echo.echo("meanwhile") == "meanwhile"
            within = IO_TIMEOUT + 4 if case.expect == "timeout" else 5
            closed, got = bad.wait_closed(within)
            elapsed = time.monotonic() - start
            assert closed, f"bad connection still open after {within}s"
            assert got == b"", got[:100]
            if case.expect == "timeout":
                assert elapsed >= IO_TIMEOUT - 0.5, f"closed after {elapsed:.1f}s, before io_timeout"
        assert good.echo.echo("after") == "after"
        assert good2.echo.echo("after") == "after"
    finally:
        good.close()
        good2.close()
    fresh = ThriftClient(thrift_server.port, "unframed")
    try:
        assert fresh.echo.echo("new") == "new"
    finally:
        fresh.close()
    if case.expect == "warning":
        # docs/thrift.md: that connection is closed with one WARNING line
        log.wait_for(rf"{CLOSING} 127\.0\.0\.1:{bad_port}|ERROR")
        time.sleep(0.3)  # room for a second record that should not come
        records = log.records()
        assert len(records) == 1, "".join(records)
        assert " WARNING " in records[0] and f"{CLOSING} 127.0.0.1:{bad_port}" in records[0], records[0]
        assert TRACEBACK not in log.out


def proc_status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def dangerous_header_frame(variant: str) -> bytes:
    """THeader frames that libthrift 0.17 mishandles into memory corruption.

    "17-transforms", "overlong-varint": the zlib transform in a header the
    core's own parser gives up on (more than 16 transforms, a varint longer
    than 5 bytes), so it would reach libthrift's zlib untransform, which
    inflates into a buffer sized for the compressed frame. The payload is a
    valid call that inflates from 36 to 924 bytes.

    "negative-protocol-id": protocol id 0xFFFF (-1 as libthrift's int16) and
    a valid call: libthrift's writeVarint32 never ends on a negative number
    when it writes the reply's header."""
    call = BINARY_CALL + b"\x0b\x00\x01" + struct.pack(">i", 900) + b"A" * 900 + b"\x00"
    payload = zlib.compress(call, 9)
    if variant == "17-transforms":
        head = bytes([0, 17, 1] + [99] * 16)
    elif variant == "overlong-varint":  # protocol id 0 in 6 bytes, then one zlib transform
        head = b"\x80\x80\x80\x80\x80\x00\x01\x01"
    else:
        head, payload = b"\xff\xff\x03\x00", call
    while len(head) % 4:
        head += b"\x00"
    return frame(b"\x0f\xff\x00\x00" + struct.pack(">i", 1) + struct.pack(">H", len(head) // 4) + head + payload)


@pytest.mark.parametrize("variant", ["17-transforms", "overlong-varint", "negative-protocol-id"])
def test_thrift_dangerous_header_frame_is_refused_safely(run_server, tmp_path, variant):
    # A corrupt frame closes its connection with one WARNING (docs/thrift.md);
    # these must never reach the libthrift code that corrupts memory with
    # them (the zlib untransform, which the core replaces for this reason;
    # the varint writer on an unknown protocol id).
    shutil.copy(EXAMPLE / "echo_app.py", tmp_path / "echo_app.py")
    shutil.copytree(EXAMPLE / "gen", tmp_path / "gen")
    server = run_server(ini=THRIFT_INI, env=SERVER_ENV)
    log = Log(server)
    raw = dangerous_header_frame(variant)
    ports, results = [], []
    for _ in range(5):
        try:
            with RawConnection(server.port) as bad:
                ports.append(bad.local_port)
                bad.send(raw)
                results.append(bad.wait_closed(5))
        except ConnectionRefusedError:
            break
    time.sleep(0.3)
    assert server.proc.poll() is None, (
        f"the server died ({server.proc.returncode}) after {len(ports)} frame(s):\n{server.stderr[-2000:]}"
    )
    good = ThriftClient(server.port, "header")
    try:
        assert good.echo.echo("still here") == "still here"
    finally:
        good.close()

    # Refused like any corrupt frame: no reply (a reply means the frame went
    # through libthrift's untransform or reply writer), closed with one
    # WARNING each.
    assert [(closed, got[:60]) for closed, got in results] == [(True, b"")] * 5
    for port in ports:
        log.wait_for(rf"WARNING .*{CLOSING} 127\.0\.0\.1:{port}")
    assert server.stop() == 0


#: A method name declared 2 GiB long (binary protocol), in 12 bytes.
HUGE_NAME = b"\x80\x01\x00\x01" + struct.pack(">i", 0x7FFFFFF0) + b"echo"


@pytest.mark.parametrize(
    "kind",
    [
        # find_message() walks an unframed message to find its end
        "unframed",
        # with access_log on, the core reads the method name of every call
        "framed-with-access-log",
    ],
)
def test_thrift_huge_declared_string_is_refused_cheaply(run_server, tmp_path, kind):
    # The declared size is over max_frame_size (16 MiB) and over what was
    # sent: the connection must be closed at once, with no 2 GiB allocation
    # and no stall of the other connections on the I/O thread.
    shutil.copy(EXAMPLE / "echo_app.py", tmp_path / "echo_app.py")
    shutil.copytree(EXAMPLE / "gen", tmp_path / "gen")
    ini = THRIFT_INI.replace("io_timeout", "access_log = true\nio_timeout") if "access-log" in kind else THRIFT_INI
    server = run_server(ini=ini, env=SERVER_ENV)
    pid = server.proc.pid
    good = ThriftClient(server.port, "framed")
    try:
        assert good.echo.echo("warm") == "warm"
        before = proc_status_kb(pid, "VmHWM")
        with RawConnection(server.port) as bad:
            bad.send(HUGE_NAME if kind == "unframed" else frame(HUGE_NAME + b"\x00" * 8))
            time.sleep(0.05)
            start = time.monotonic()
            assert good.echo.echo("meanwhile") == "meanwhile"
            stalled = time.monotonic() - start
            closed, _ = bad.wait_closed(5)
        grown_mb = (proc_status_kb(pid, "VmHWM") - before) / 1024
    finally:
        good.close()
    assert closed, "a message declaring 2 GiB is still being waited for"
    assert stalled < 1.0, f"another connection waited {stalled:.1f}s"
    assert grown_mb < 256, f"the server's peak memory grew by {grown_mb:.0f} MiB"
    assert server.stop() == 0


# --------------------------------------------------------------------------
# load: 5,000 idle keep-alive connections; graceful stop under load
# --------------------------------------------------------------------------

IDLE_CONNECTIONS = 5000


def raise_nofile(need: int) -> Tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, (
        f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors this test needs"
    )
    return soft, hard


def test_five_thousand_idle_keep_alive_connections(run_server):
    # the client's and the server's sockets, and some room; the server
    # inherits the raised limit
    old = raise_nofile(IDLE_CONNECTIONS + 600)
    conns: List[socket.socket] = []
    try:
        # The 5000 requests arrive at once: with the default
        # max_pending_requests (1024), those the app has not taken yet would
        # be shed with 503 (tested elsewhere); here every one must be served.
        server = run_server(APP, server_options="max_pending_requests = 0\n")
        request = get("/fast")
        for _ in range(IDLE_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            conns.append(s)
        for s in conns:
            s.sendall(request)
        # every connection gets its answer and stays open (keep-alive)
        for i, s in enumerate(conns):
            data = b""
            while not data.endswith(b"\r\n\r\nfast"):
                chunk = s.recv(4096)
                assert chunk, f"connection {i} closed"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close" not in data.lower()
        # 100 normal requests on new connections, all answered
        start = time.monotonic()
        for _ in range(100):
            assert_serving(server.port)
        assert time.monotonic() - start < 30
        # and the idle ones are still served
        for s in conns[::250]:
            s.sendall(request)
            data = b""
            while not data.endswith(b"\r\n\r\nfast"):
                chunk = s.recv(4096)
                assert chunk, "an idle keep-alive connection was closed"
                data += chunk
        assert server.stop() == 0
    finally:
        for s in conns:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@dataclass
class Outcome:
    """What happened to one request whose bytes were all sent."""

    id: str
    #: "complete": a whole 200 with the right body; "clean-close": the
    #: connection ended (EOF or reset) before any byte of the response;
    #: "truncated": it ended after some bytes; "wrong": a whole but wrong
    #: response.
    kind: str
    at: float
    partial: bytes = b""


def test_graceful_stop_under_load_loses_no_accepted_request(run_server):
    """Definition: a request is *accepted* when the app saw it (its "handled
    ID" log line). Every accepted request must get a complete response. A
    request the server never accepted may only end in a clean close (the
    connection closed before any response byte), never in a truncated or
    wrong response; the client then reconnects, and stops when connections
    are refused."""
    server = run_server(APP, server_options="stop_timeout = 10 seconds\n")
    outcomes: List[Outcome] = []
    lock = threading.Lock()
    stop_at: List[float] = []
    errors: List[str] = []

    def client(t: int) -> None:
        n = 0
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                try:
                    c = RawConnection(server.port, timeout=30)
                except OSError:
                    return  # refused: the server is gone
                try:
                    while time.monotonic() < deadline:
                        n += 1
                        rid = f"t{t}-{n}"
                        if not c.send(get(f"/work?id={rid}")):
                            break  # not all bytes sent: not counted
                        try:
                            resp = c.read_response()
                        except Incomplete as e:
                            kind = "clean-close" if not e.partial else "truncated"
                            with lock:
                                outcomes.append(Outcome(rid, kind, time.monotonic(), e.partial))
                            break
                        kind = "complete" if (resp.status, resp.body) == (200, f"done {rid}".encode()) else "wrong"
                        with lock:
                            outcomes.append(Outcome(rid, kind, time.monotonic(), resp.body))
                        if "close" in (resp.header("connection") or "").lower():
                            break
                finally:
                    c.close()
        except BaseException as exc:  # reported below
            with lock:
                errors.append(f"client {t}: {exc!r}")

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if sum(o.kind == "complete" for o in outcomes) >= 150:
                break
        time.sleep(0.05)
    stop_at.append(time.monotonic())
    server.send(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert server.wait(30) == 0
    assert errors == []
    handled = set(re.findall(r"robustapp: handled (\S+)", server.stdout))
    by_kind: Dict[str, List[Outcome]] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, []).append(o)
    complete = {o.id for o in by_kind.get("complete", [])}
    assert len(complete) >= 150
    assert by_kind.get("truncated", []) == [], "responses cut in the middle"
    assert by_kind.get("wrong", []) == []
    lost = sorted(handled - complete)
    assert lost == [], f"accepted but not answered: {lost}"
    unanswered_but_handled = [o.id for o in by_kind.get("clean-close", []) if o.id in handled]
    assert unanswered_but_handled == []
    # the stop came mid-load: requests in flight at SIGTERM were finished
    assert any(o.at > stop_at[0] for o in by_kind.get("complete", [])), "no request was in flight at SIGTERM"
    assert "Traceback" not in server.stdout
