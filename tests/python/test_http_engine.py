"""The HTTP engine against hostile clients and misbehaving apps, end to end:
bounded chunk metadata, trailers kept out of the environ, the app's
Connection: close obeyed, response framing, Date, bodies written without
copies, and native apps whose failures stop at the boundary."""
from __future__ import annotations

import email.utils
import http.client
import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from clients import Log, RawConnection
from conftest import server_command

REPO = Path(__file__).resolve().parents[2]

APP = """
import json

SEEN = []
BIG = b"x" * (1 << 20)


def make_app(app_config):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        SEEN.append(path)
        if path == "/env":
            body = environ["wsgi.input"].read()
            seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k in ("CONTENT_TYPE", "CONTENT_LENGTH")}
            seen["body"] = body.decode("latin-1")
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(seen).encode()]
        if path == "/seen":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(SEEN).encode()]
        if path == "/close":
            start_response("200 OK", [("Connection", "close"), ("Content-Type", "text/plain")])
            return [b"closing"]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (piece for piece in [b"str", b"eam"])
        if path == "/te-list":
            start_response("200 OK", [("Transfer-Encoding", "chunked")])
            return [b"hello"]
        if path == "/te-both":
            start_response("200 OK", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
            return [b"hello"]
        if path == "/te-stream":
            start_response("200 OK", [("Transfer-Encoding", "chunked")])
            return (piece for piece in [b"hel", b"lo"])
        if path == "/te-gzip":
            start_response("200 OK", [("Transfer-Encoding", "gzip, chunked")])
            return [b"hello"]
        if path == "/te-http10-stream":
            start_response("200 OK", [("Transfer-Encoding", "chunked")])
            return (piece for piece in [b"hel", b"lo"])
        if path == "/no-reason":
            start_response("299 ", [])
            return [b""]
        if path == "/big-list":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return [BIG] * 300
        if path == "/big-stream":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return (BIG for _ in range(300))
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"nope"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fast"]
    return app
"""

DISPATCH = ["gevent", "threads"]
CHUNKED_HEAD = b"POST /env HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssWatch:
    """The highest RSS of a process while the block runs, sampled often."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_kb(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            try:
                self.peak = max(self.peak, rss_kb(self.pid))
            except (OSError, AssertionError):
                return

    def __enter__(self) -> "RssWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 1024


@pytest.fixture(params=DISPATCH)
def server(request, run_server):
    return run_server(APP, server_options=f"dispatch = {request.param}\nheader_timeout = 2 seconds\n")


def endless(server, head: bytes, piece: bytes, seconds: float = 10) -> Tuple[Optional[int], float, float]:
    """Sends ``head`` then ``piece`` over and over until the server answers
    or closes (or ``seconds`` pass). Returns (status or None if closed
    without one, seconds it took, RSS growth in MB)."""
    with RssWatch(server.proc.pid) as watch, RawConnection(server.port, timeout=seconds + 5) as c:
        start = time.monotonic()
        c.send(head)
        sent = 0
        while time.monotonic() - start < seconds and sent < 200 * 1024 * 1024:
            r, w, _ = select.select([c.sock], [c.sock], [], 1)
            if r:
                break
            if w and not c.send(piece):
                break
            sent += len(piece)
        elapsed = time.monotonic() - start
        try:
            status: Optional[int] = c.read_response().status
        except Exception:
            status = None
    return status, elapsed, watch.growth_mb


# --------------------------------------------------------------------------
# chunk metadata is bounded in size and time
# --------------------------------------------------------------------------


def test_endless_chunk_extension_is_refused(server):
    status, elapsed, growth = endless(server, CHUNKED_HEAD + b"1;a=", b"x" * 65536)
    assert status in (400, None), status
    assert elapsed < 8, elapsed
    assert growth < 50, f"RSS grew {growth:.1f} MB"
    assert_serving(server)


def test_endless_trailer_section_is_refused(server):
    status, elapsed, growth = endless(server, CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n", b"X-Trailer: value\r\n" * 4096)
    assert status in (431, None), status
    assert elapsed < 8, elapsed
    assert growth < 50, f"RSS grew {growth:.1f} MB"
    assert_serving(server)


def test_unclosed_quoted_extension_is_refused(server):
    status, elapsed, growth = endless(server, CHUNKED_HEAD + b'3;a="x', b"xxxxxx\r\n" * 8192)
    assert status == 400, status
    assert elapsed < 8, elapsed
    assert growth < 50, f"RSS grew {growth:.1f} MB"
    assert_serving(server)


def test_unclosed_quoted_extension_with_its_data_is_refused_at_once(server):
    with RawConnection(server.port) as c:
        c.send(CHUNKED_HEAD + b'3;a="xyz\r\nabc\r\n0\r\n\r\n')
        assert c.read_response().status == 400
        assert c.closed_by_peer()


def test_many_small_trailers_over_the_count_are_refused(server):
    with RawConnection(server.port) as c:
        c.send(CHUNKED_HEAD + b"2\r\nhi\r\n0\r\n" + b"".join(b"X-T%d: v\r\n" % i for i in range(150)) + b"\r\n")
        assert c.read_response().status == 431


@pytest.mark.parametrize("start", [b"1;a=", b"2\r\nhi\r\n0\r\nX-Slow: "], ids=["extension", "trailer"])
def test_chunk_metadata_trickling_in_is_cut_at_header_timeout(server, start):
    # One byte every 0.3 s: each read is quick (io_timeout never fires),
    # but the line as a whole must arrive within header_timeout (2 s).
    with RawConnection(server.port, timeout=20) as c:
        c.send(CHUNKED_HEAD + start)
        begin = time.monotonic()
        closed = False
        while time.monotonic() - begin < 15:
            if not c.send(b"x"):
                closed = True
                break
            r, _, _ = select.select([c.sock], [], [], 0.3)
            if r:
                closed, _ = c.wait_closed(5)
                break
        assert closed, "still open"
        assert time.monotonic() - begin < 2 + 4
    assert_serving(server)


# --------------------------------------------------------------------------
# trailers never reach the environ
# --------------------------------------------------------------------------

SPOOFS = (
    b"Authorization: Bearer evil\r\n"
    b"Host: evil.example\r\n"
    b"X-Forwarded-For: 6.6.6.6\r\n"
    b"Content-Type: text/evil\r\n"
    b"Cookie: session=evil\r\n"
)


@pytest.mark.parametrize("size", [2, 200 * 1024], ids=["read-before-the-app", "read-by-the-app"])
def test_trailers_leave_the_environ_unchanged(server, size):
    body = b"b" * size
    chunked = b"%x\r\n" % size + body + b"\r\n0\r\n" + SPOOFS + b"\r\n"
    head = (
        b"POST /env HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n"
    )
    with RawConnection(server.port) as c:
        c.send(head + chunked)
        resp = c.read_response()
    assert resp.status == 200
    seen = json.loads(resp.body)
    assert len(seen.pop("body")) == size
    assert seen == {
        "HTTP_HOST": "test",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_TYPE": "text/plain",
        "HTTP_X_FORWARDED_FOR": "1.2.3.4",
    }


# --------------------------------------------------------------------------
# responses
# --------------------------------------------------------------------------


def test_connection_close_from_the_app_closes_and_stops_the_pipeline(server):
    with RawConnection(server.port) as c:
        c.send(b"GET /close HTTP/1.1\r\nHost: test\r\n\r\nGET /after-close HTTP/1.1\r\nHost: test\r\n\r\n")
        resp = c.read_response()
        assert (resp.status, resp.body) == (200, b"closing")
        assert resp.connection_tokens() == ["close"]
        assert c.closed_by_peer(), "connection left open after Connection: close"
    with RawConnection(server.port) as c:
        c.send(b"GET /seen HTTP/1.1\r\nHost: test\r\n\r\n")
        seen = json.loads(c.read_response().body)
    assert "/close" in seen
    assert "/after-close" not in seen


def assert_date(resp) -> None:
    value = resp.header("date")
    assert value, resp
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT", value), value
    when = email.utils.parsedate_to_datetime(value).timestamp()
    assert abs(when - time.time()) < 60, value


@pytest.mark.parametrize(
    "raw,method,status",
    [
        (b"GET / HTTP/1.1\r\nHost: test\r\n\r\n", "GET", 200),
        (b"GET /missing HTTP/1.1\r\nHost: test\r\n\r\n", "GET", 404),
        (b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n", "HEAD", 200),
        (b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n", "GET", 200),
        (b"GET / HTTP/1.0\r\n\r\n", "GET", 200),
        (b"GET / HTTP/1.1\r\n\r\n", "GET", 400),
        (b"GET / HTTP/2.0\r\nHost: test\r\n\r\n", "GET", 505),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: test\r\n\r\n", "GET", 414),
        (b"GET / HTTP/1.1\r\nHost: test\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", "GET", 431),
    ],
    ids=["ok", "app-404", "head", "streamed", "http10", "bad-request", "505", "414", "431"],
)
def test_every_response_has_a_date(server, raw, method, status):
    with RawConnection(server.port) as c:
        c.send(raw)
        resp = c.read_response(method)
    assert resp.status == status
    assert_date(resp)


def test_head_of_a_streamed_route_claims_no_length(server):
    with RawConnection(server.port) as c:
        c.send(b"HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        resp = c.read_response("HEAD")
        assert resp.status == 200
        assert resp.header("content-length") is None, resp.headers
        # the connection is still in sync: the next response is the next request's
        c.send(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.read_response().body == b"stream"


def test_head_of_a_list_route_describes_the_get(server):
    with RawConnection(server.port) as c:
        c.send(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.read_response("HEAD").header("content-length") == "4"


def test_an_empty_reason_phrase_stays_empty(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /no-reason HTTP/1.1\r\nHost: test\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            data += s.recv(4096)
    assert data.startswith(b"HTTP/1.1 299 \r\n"), data[:40]


@pytest.mark.parametrize("path", ["/te-list", "/te-both", "/te-stream", "/te-gzip"])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_an_apps_transfer_encoding_never_doubles_the_framing(server, path, version):
    with RawConnection(server.port) as c:
        c.send(f"GET {path} {version}\r\nHost: test\r\n\r\n".encode())
        resp = c.read_response()  # asserts not both framings
    assert resp.status == 200
    assert resp.body == b"hello"
    te = resp.header("transfer-encoding")
    assert te in (None, "chunked"), te
    assert not (te and resp.header("content-length")), resp.headers
    if version == "HTTP/1.0":
        assert te is None
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.read() == b"hello"
        # and the same connection serves the next request
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"fast"
    finally:
        conn.close()


# --------------------------------------------------------------------------
# bodies are written from where they are
# --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big-list", "/big-stream"])
def test_a_large_body_to_a_slow_reader_is_not_copied(server, path):
    total = 300 * (1 << 20)
    with RssWatch(server.proc.pid) as watch, RawConnection(server.port, timeout=60) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = c.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"Content-Length: %d" % total in head or path == "/big-stream"
        time.sleep(1.5)  # a slow reader: the server must hold the rest
        got = len(c.buf)
        deadline = time.monotonic() + 60
        while got < total and time.monotonic() < deadline:
            chunk = c.sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            if got < 20 * (1 << 20):
                time.sleep(0.002)  # slow at first
    # (the chunked framing adds a few bytes per piece)
    assert got >= total, got
    assert watch.growth_mb < 100, f"RSS grew {watch.growth_mb:.1f} MB"
    assert_serving(server)


def assert_serving(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"fast")
    finally:
        conn.close()


# --------------------------------------------------------------------------
# native apps: failures stop at the boundary
# --------------------------------------------------------------------------


def cmake() -> str:
    beside = Path(sys.executable).parent / "cmake"
    return str(beside) if beside.exists() else "cmake"


@pytest.fixture(scope="module")
def faulty_libs(tmp_path_factory) -> Dict[str, Path]:
    build = tmp_path_factory.mktemp("native_faults")
    sdk = subprocess.run([*server_command(), "--sdk-dir"], check=True, capture_output=True, text=True).stdout.strip()
    for cmd in (
        [cmake(), "-S", str(REPO / "tests/python/native_faults"), "-B", str(build), f"-DBaseplateServe_DIR={sdk}"],
        [cmake(), "--build", str(build)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return {"http": build / "libfaulty_http.so", "thrift": build / "libfaulty_thrift.so"}


def native_http_ini(lib: Path) -> str:
    return f"[server:main]\nfactory = baseplate.server.wsgi\nstop_timeout = 1 seconds\n\n[app:main]\nfactory = {lib}:make_app\n"


@pytest.mark.parametrize(
    "path,why",
    [
        ("/throw42", "failed: a non-standard exception"),
        ("/throw-std", "failed: a handler failed"),
        ("/drop", "dropped a request without answering it"),
        ("/body-first", "body bytes before a response head"),
    ],
)
def test_a_failing_native_http_handler_gets_a_500_and_the_server_serves_on(run_server, faulty_libs, path, why):
    server = run_server(ini=native_http_ini(faulty_libs["http"]))
    log = Log(server)
    for _ in range(3):  # not once by luck: every time
        with RawConnection(server.port) as c:
            c.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            resp = c.read_response()
            assert resp.status == 500, resp
            assert resp.connection_tokens() == ["close"]
    out = log.wait_for(re.escape(why))
    if "failed" in why:
        assert f"libfaulty_http.so:make_app {why}" in out, out
    with RawConnection(server.port) as c:
        c.send(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.read_response().body == b"ok"
    assert server.stop() == 0


def test_a_native_handler_failing_after_its_head_closes_the_connection(run_server, faulty_libs):
    server = run_server(ini=native_http_ini(faulty_libs["http"]))
    with RawConnection(server.port) as c:
        c.send(b"GET /head-then-throw HTTP/1.1\r\nHost: test\r\n\r\n")
        closed, data = c.wait_closed(10)
        assert closed
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"partial")
    with RawConnection(server.port) as c:
        c.send(b"GET /ok HTTP/1.1\r\nHost: test\r\n\r\n")
        assert c.read_response().body == b"ok"
    assert server.stop() == 0


def test_a_native_app_holding_an_exchange_at_stop_exits_cleanly(run_server, faulty_libs):
    server = run_server(ini=native_http_ini(faulty_libs["http"]))
    c = RawConnection(server.port)
    try:
        c.send(b"GET /hold HTTP/1.1\r\nHost: test\r\n\r\n")
        time.sleep(0.5)
        start = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=30) == 0, server.stdout + server.stderr
        assert time.monotonic() - start < 1 + 5 + 5  # drain (default) + stop_timeout + margin
        assert "Stopped" in server.stdout
    finally:
        c.close()


@pytest.fixture
def echo_module():
    gen = str(REPO / "examples" / "thrift_echo" / "gen")
    sys.path.insert(0, gen)
    try:
        from echo import Echo

        yield Echo
    finally:
        sys.path.remove(gen)
        for name in [m for m in sys.modules if m == "echo" or m.startswith("echo.")]:
            del sys.modules[name]


@pytest.mark.parametrize("kind", ["header", "framed"])
def test_a_failing_native_thrift_handler_answers_and_the_server_serves_on(run_server, faulty_libs, echo_module, kind):
    from thrift.protocol import TBinaryProtocol
    from thrift.Thrift import TApplicationException
    from thrift.transport import TSocket, TTransport

    from clients import header_protocol

    Echo = echo_module
    server = run_server(
        ini=f"[server:main]\nfactory = baseplate.server.thrift\n\n[app:main]\nfactory = {faulty_libs['thrift']}:make_processor\n"
    )
    log = Log(server)
    sock = TSocket.TSocket("127.0.0.1", server.port)
    sock.setTimeout(10_000)
    if kind == "header":
        prot = header_protocol(False)(sock)
    else:
        prot = TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(sock))
    prot.trans.open()
    try:
        client = Echo.Client(prot)
        # twoway: a TApplicationException, the connection still usable
        with pytest.raises(TApplicationException):
            client.echo("throw42")
        assert client.echo("still here") == "still here"
        with pytest.raises(TApplicationException):
            client.fail_undeclared("x")
        # oneway: nothing goes back, the next call is served
        client.remember("throw42")
        assert client.echo("after oneway") == "after oneway"
    finally:
        prot.trans.close()
    out = log.wait_for(r"libfaulty_thrift\.so:make_processor failed: a non-standard exception")
    assert out.count("failed: a non-standard exception") >= 3, out
    assert server.stop() == 0
