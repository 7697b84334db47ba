"""End to end: `factory = baseplate.server.thrift` serving the Thrift echo
example (examples/thrift_echo) to real Thrift clients: the Python thrift
package's five client types (THeader with binary or compact inside, framed
and unframed binary, framed and unframed compact), hand-written frames on
raw sockets, and a C++ client built with libthrift.
"""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

from contextlib import closing, contextmanager
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TApplicationException, TMessageType
from thrift.transport import TSocket, TTransport
from thrift.transport.THeaderTransport import THeaderSubprotocolID, THeaderTransformID
from thrift.transport.TTransport import TTransportException

from clients import TRACEBACK, Log, header_protocol
from conftest import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "thrift_echo"
CLIENT_PROJECT = ROOT / "tests" / "cpp" / "thrift_client"

sys.path.insert(0, str(EXAMPLE / "gen"))
from echo import Echo  # noqa: E402  (the example's generated code)
from echo.ttypes import EchoError  # noqa: E402

CLOSING = "closing Thrift connection from"
TIMEOUT_MS = 30_000


def _server_env() -> Optional[Dict[str, str]]:
    """The server runs in a temp dir: a relative PYTHONPATH (as in
    `PYTHONPATH=python pytest`) would point nowhere there, and the server
    would quietly be the installed package instead of the tree's."""
    path = os.environ.get("PYTHONPATH")
    if not path:
        return None
    return {"PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep) if p)}


SERVER_ENV = _server_env()


def echo_ini(server_options: str = "") -> str:
    return (
        "[server:main]\n"
        "factory = baseplate.server.thrift\n"
        "stop_timeout = 10 seconds\n"
        + textwrap.dedent(server_options)
        + "\n[app:main]\n"
        "factory = echo_app:make_processor\n"
    )


def copy_example(cwd: Path) -> None:
    """The example's processor and generated code, next to app.ini."""
    shutil.copy(EXAMPLE / "echo_app.py", cwd / "echo_app.py")
    if not (cwd / "gen").exists():
        shutil.copytree(EXAMPLE / "gen", cwd / "gen")


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


#: Each client construction, over any transport (a socket or a memory buffer).
KINDS: Dict[str, Callable] = {
    "header_binary": header_protocol(False),
    "header_compact": header_protocol(True),
    "framed_binary": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(t)),
    "buffered_binary": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(t)),
    "framed_compact": lambda t: TCompactProtocol.TCompactProtocol(TTransport.TFramedTransport(t)),
    "buffered_compact": lambda t: TCompactProtocol.TCompactProtocol(TTransport.TBufferedTransport(t)),
}
HEADER_KINDS = ["header_binary", "header_compact"]


class CountingSocket(TSocket.TSocket):
    """A TSocket that counts the bytes that went over the wire."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received = 0
        self.sent = 0

    def read(self, sz: int) -> bytes:
        data = super().read(sz)
        self.received += len(data)
        return data

    def write(self, buff: bytes) -> None:
        super().write(buff)
        self.sent += len(buff)


class Client:
    """One connection: the generated client, its protocol and socket."""

    def __init__(self, port: int, kind: str) -> None:
        self.kind = kind
        self.sock = CountingSocket("127.0.0.1", port)
        self.sock.setTimeout(TIMEOUT_MS)
        self.prot = KINDS[kind](self.sock)
        self.trans = self.prot.trans
        self.echo = Echo.Client(self.prot)

    def open(self) -> "Client":
        self.trans.open()
        return self

    def close(self) -> None:
        self.trans.close()
        self.sock.close()

    def __enter__(self) -> "Client":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def write_message(prot, name: str, args, seqid: int, mtype: int = TMessageType.CALL) -> None:
    prot.writeMessageBegin(name, mtype, seqid)
    args.write(prot)
    prot.writeMessageEnd()
    prot.trans.flush()


def encode_call(kind: str, name: str, args, seqid: int, mtype: int = TMessageType.CALL) -> bytes:
    """The bytes a client of `kind` puts on the wire for one call."""
    mem = TTransport.TMemoryBuffer()
    write_message(KINDS[kind](mem), name, args, seqid, mtype)
    return mem.getvalue()


def read_reply(prot, result_cls) -> Tuple[str, int, int, object]:
    """One reply: (name, message type, seqid, result struct or exception)."""
    name, mtype, seqid = prot.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        body: object = TApplicationException()
    else:
        body = result_cls()
    body.read(prot)
    prot.readMessageEnd()
    return name, mtype, seqid, body


@contextmanager
def raw_connection(port: int) -> Iterator[socket.socket]:
    with closing(socket.create_connection(("127.0.0.1", port), timeout=30)) as s:
        yield s


def socket_protocol(sock: socket.socket, kind: str):
    """A protocol of `kind` reading from (and writing to) a connected socket."""
    t = TSocket.TSocket()
    t.setHandle(sock)
    return KINDS[kind](t)


def wait_closed(sock: socket.socket, timeout: float = 15) -> bytes:
    """Reads until the server closes the connection; returns what came."""
    sock.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The echo example with default options, shared by the module."""
    cwd = tmp_path_factory.mktemp("thrift_echo")
    copy_example(cwd)
    (cwd / "app.ini").write_text(echo_ini())
    port = free_port()
    srv = Server(["--bind", f"127.0.0.1:{port}", "app.ini"], cwd, SERVER_ENV, port)
    try:
        srv.wait_listening()
        yield srv
        assert srv.stop() == 0, srv.stdout + srv.stderr
    finally:
        srv.kill()


@pytest.fixture
def echo_server(run_server, tmp_path) -> Callable[..., Server]:
    """A server of its own, for a test that reads its log or sets options."""

    def start(server_options: str = "") -> Server:
        copy_example(tmp_path)
        return run_server(ini=echo_ini(server_options), env=SERVER_ENV)

    return start


# --------------------------------------------------------------------------
# the client types
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_client_type_calls_echo(server, kind):
    with Client(server.port, kind) as c:
        assert c.echo.echo("hello") == "hello"
        assert c.echo.echo("") == ""
        text = "unicode \u00e9\u4e16\u754c " + kind
        assert c.echo.echo(text) == text
        # a second call on the same connection, then a larger one
        big = "0123456789abcdef" * 4096
        assert c.echo.echo(big) == big


def test_header_compact_gets_a_compact_reply(server):
    with Client(server.port, "header_compact") as c:
        assert c.echo.echo("compact") == "compact"
        assert c.trans.protocol_id == THeaderSubprotocolID.COMPACT
    with Client(server.port, "header_binary") as c:
        assert c.echo.echo("binary") == "binary"
        assert c.trans.protocol_id == THeaderSubprotocolID.BINARY


@pytest.mark.parametrize("kind", list(KINDS))
def test_client_types_may_alternate_between_connections(server, kind):
    """Every connection detects its own client type."""
    others = [k for k in KINDS if k != kind]
    with Client(server.port, kind) as first:
        for other in others:
            with Client(server.port, other) as c:
                assert c.echo.echo(other) == other
            assert first.echo.echo(kind) == kind


# --------------------------------------------------------------------------
# THeader info headers and the zlib transform
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HEADER_KINDS)
def test_info_headers_round_trip(server, kind):
    with Client(server.port, kind) as c:
        c.trans.set_header(b"Trace", b"trace-1234")
        c.trans.set_header(b"X-Other", b"value \xc3\xa9")
        assert c.echo.request_headers() == {"Trace": "trace-1234", "X-Other": "value \u00e9"}
        assert c.trans.get_headers().get(b"Echo-Trace") == b"trace-1234"

        # the client sends headers with one request only: none on the next,
        # and the reply header of the last call does not stick either
        assert c.echo.request_headers() == {}
        assert b"Echo-Trace" not in c.trans.get_headers()

        c.prot.set_header(b"Trace", b"second")
        assert c.echo.echo("with headers") == "with headers"
        assert c.trans.get_headers().get(b"Echo-Trace") == b"second"


@pytest.mark.parametrize("kind", [k for k in KINDS if k not in HEADER_KINDS])
def test_clients_without_headers_see_no_headers(server, kind):
    with Client(server.port, kind) as c:
        assert c.echo.request_headers() == {}


@pytest.mark.parametrize("kind", HEADER_KINDS)
def test_zlib_request_gets_zlib_reply(server, kind):
    payload = "compress me please " * 50_000  # ~950 KB, very compressible
    with Client(server.port, kind) as c:
        c.trans.add_transform(THeaderTransformID.ZLIB)
        c.trans.set_header(b"Trace", b"zipped")
        assert c.echo.echo(payload) == payload
        assert c.trans.get_headers().get(b"Echo-Trace") == b"zipped"
        # both ways compressed on the wire
        assert c.sock.sent < len(payload) // 20, c.sock.sent
        assert c.sock.received < len(payload) // 20, c.sock.received
        # and again on the same connection
        assert c.echo.echo(payload[:1000]) == payload[:1000]

    # without the transform the reply is not compressed
    with Client(server.port, kind) as c:
        assert c.echo.echo(payload) == payload
        assert c.sock.received > len(payload)


# --------------------------------------------------------------------------
# oneway, declared and undeclared exceptions, unknown methods
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_oneway_then_recall(server, kind):
    value = f"{kind}-{uuid.uuid4()}"
    with Client(server.port, kind) as c:
        c.echo.remember(value)
        assert c.echo.recall() == value
    with Client(server.port, kind) as c:
        assert c.echo.recall() == value


@pytest.mark.parametrize("kind", ["framed_binary", "buffered_compact", "header_binary"])
def test_oneway_sends_nothing_back(server, kind):
    """On the wire: a oneway call, then two calls; exactly two replies come,
    those of the two calls, in order."""
    value = f"raw-{uuid.uuid4()}"
    data = (
        encode_call(kind, "remember", Echo.remember_args(message=value), 1, TMessageType.ONEWAY)
        + encode_call(kind, "echo", Echo.echo_args(message="after oneway"), 2)
        + encode_call(kind, "recall", Echo.recall_args(), 3)
    )
    with raw_connection(server.port) as s:
        s.sendall(data)
        prot = socket_protocol(s, kind)
        assert read_reply(prot, Echo.echo_result)[:3] == ("echo", TMessageType.REPLY, 2)
        name, mtype, seqid, result = read_reply(prot, Echo.recall_result)
        assert (name, mtype, seqid, result.success) == ("recall", TMessageType.REPLY, 3, value)
        s.shutdown(socket.SHUT_WR)
        assert wait_closed(s) == b""


@pytest.mark.parametrize("kind", list(KINDS))
def test_declared_exception(server, kind):
    with Client(server.port, kind) as c:
        with pytest.raises(EchoError) as info:
            c.echo.fail_declared("declared failure")
        assert info.value.message == "declared failure"
        assert c.echo.echo("still here") == "still here"


@pytest.mark.parametrize("kind", ["header_binary", "framed_binary", "buffered_compact"])
def test_undeclared_exception(echo_server, kind):
    server = echo_server()
    log = Log(server)
    with Client(server.port, kind) as c:
        with pytest.raises(TApplicationException) as info:
            c.echo.fail_undeclared("undeclared kaboom")
        assert info.value.type == TApplicationException.INTERNAL_ERROR
        assert c.echo.echo("same connection") == "same connection"
    out = log.wait_for(r"RuntimeError: undeclared kaboom")
    assert TRACEBACK in out
    assert "fail_undeclared" in out
    assert CLOSING not in out


@pytest.mark.parametrize("kind", list(KINDS))
def test_unknown_method(server, kind):
    with Client(server.port, kind) as c:
        write_message(c.prot, "no_such_method", Echo.echo_args(message="x"), 41)
        name, mtype, seqid, exc = read_reply(c.prot, Echo.echo_result)
        assert (name, mtype, seqid) == ("no_such_method", TMessageType.EXCEPTION, 41)
        assert isinstance(exc, TApplicationException)
        assert exc.type == TApplicationException.UNKNOWN_METHOD
        assert "no_such_method" in (exc.message or "")
        assert c.echo.echo("after unknown") == "after unknown"


# --------------------------------------------------------------------------
# ordering and concurrency
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_pipelined_calls_answered_in_order(server, kind):
    payloads = [f"first {kind}", "second " * 100, "third"]
    data = b"".join(
        encode_call(kind, "echo", Echo.echo_args(message=p), seqid) for seqid, p in enumerate(payloads, 1)
    )
    with raw_connection(server.port) as s:
        s.sendall(data)  # all three back to back, before reading anything
        prot = socket_protocol(s, kind)
        for seqid, p in enumerate(payloads, 1):
            name, mtype, got_seqid, result = read_reply(prot, Echo.echo_result)
            assert (name, mtype, got_seqid, result.success) == ("echo", TMessageType.REPLY, seqid, p)


def test_pipelined_calls_split_across_writes(server):
    """Frames cut at odd places and sent in pieces are put back together."""
    kind = "framed_binary"
    data = b"".join(encode_call(kind, "echo", Echo.echo_args(message=f"piece {i}"), i) for i in range(1, 6))
    with raw_connection(server.port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), 7):
            s.sendall(data[i : i + 7])
        prot = socket_protocol(s, kind)
        for i in range(1, 6):
            name, mtype, seqid, result = read_reply(prot, Echo.echo_result)
            assert (name, mtype, seqid, result.success) == ("echo", TMessageType.REPLY, i, f"piece {i}")


def run_concurrent_clients(port: int, n_clients: int, n_calls: int) -> None:
    """n_clients threads, each on its own connection (the client types in
    turn), each making n_calls echo calls with payloads of its own."""
    kinds = list(KINDS)
    errors: List[str] = []
    counts = [0] * n_clients
    lock = threading.Lock()

    def run(i: int) -> None:
        kind = kinds[i % len(kinds)]
        try:
            with Client(port, kind) as c:
                for j in range(n_calls):
                    payload = f"client {i} ({kind}) call {j} " + "x" * (i * 7 + j % 13)
                    got = c.echo.echo(payload)
                    if got != payload:
                        raise AssertionError(f"client {i} call {j}: got {got[:60]!r}")
                    counts[i] += 1
        except BaseException as exc:  # reported below
            with lock:
                errors.append(f"client {i} ({kind}): {exc!r}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 240
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "clients still running after 240 s"
    assert errors == []
    assert counts == [n_calls] * n_clients


@pytest.mark.slow
def test_concurrent_clients(server):
    run_concurrent_clients(server.port, n_clients=50, n_calls=200)


def test_io_threads_and_python_threads(echo_server):
    server = echo_server("io_threads = 2\npython_threads = 4\n")
    log = Log(server)
    run_concurrent_clients(server.port, n_clients=12, n_calls=50)
    assert TRACEBACK not in log.out
    assert not log.lines("WARNING") and not log.lines("ERROR"), log.out


# --------------------------------------------------------------------------
# bad and oversized frames
# --------------------------------------------------------------------------

GARBAGE = {
    "huge_length": b"\x7f\xff\xff\xff",
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n",
    "unknown_client_type": b"\x00\x00\x00\x0c" + b"\xde\xad\xbe\xef" + b"\x00" * 8,
    "zero_length_frame": b"\x00\x00\x00\x00",
    "header_longer_than_frame": b"\x00\x00\x00\x0e\x0f\xff\x00\x00\x00\x00\x00\x01\xff\xff" + b"\x00" * 4,
    "unframed_bad_field_type": b"\x80\x01\x00\x01\x00\x00\x00\x04echo\x00\x00\x00\x01" + b"\x42\x00\x01" + b"\x00" * 8,
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_bad_frame_closes_only_that_connection(echo_server, garbage):
    server = echo_server()
    log = Log(server)
    with Client(server.port, "framed_binary") as good, Client(server.port, "header_binary") as good2:
        assert good.echo.echo("before") == "before"
        with raw_connection(server.port) as bad:
            bad_port = bad.getsockname()[1]
            bad.sendall(GARBAGE[garbage])
            wait_closed(bad)
        assert good.echo.echo("after") == "after"
        assert good2.echo.echo("after") == "after"
    log.wait_for(rf"{CLOSING} 127\.0\.0\.1:{bad_port}")
    with Client(server.port, "buffered_binary") as c:  # a new connection works too
        assert c.echo.echo("new") == "new"
    time.sleep(0.3)  # room for a second line that should not come
    warnings = log.lines("WARNING")
    assert len(warnings) == 1, log.out
    assert CLOSING in warnings[0]
    assert TRACEBACK not in log.out
    assert not log.lines("ERROR"), log.out


@pytest.mark.parametrize("kind", ["framed_binary", "buffered_binary", "header_binary"])
def test_client_gone_in_the_middle_of_a_message(echo_server, kind):
    server = echo_server()
    log = Log(server)
    whole = encode_call(kind, "echo", Echo.echo_args(message="cut short " * 20), 1)
    with Client(server.port, "framed_compact") as other:
        with raw_connection(server.port) as s:
            s.sendall(whole[: len(whole) // 2])
            assert other.echo.echo("meanwhile") == "meanwhile"
        log.wait_for(CLOSING)
        assert other.echo.echo("afterwards") == "afterwards"
    time.sleep(0.3)
    warnings = log.lines("WARNING")
    assert len(warnings) == 1, log.out
    assert TRACEBACK not in log.out


OVERSIZED = ["framed_binary", "header_binary", "framed_compact", "buffered_binary", "buffered_compact", "header_zlib"]


@pytest.mark.parametrize("case", OVERSIZED)
def test_oversized_frame(echo_server, case):
    server = echo_server("max_frame_size = 1024\n")
    log = Log(server)
    kind = "header_binary" if case == "header_zlib" else case
    with Client(server.port, "framed_binary") as other:
        assert other.echo.echo("x" * 900) == "x" * 900  # under the limit
        with Client(server.port, kind) as c:
            assert c.echo.echo("small") == "small"
            if case == "header_zlib":
                # ~200 bytes on the wire, 200 KB once inflated
                c.trans.add_transform(THeaderTransformID.ZLIB)
                big = "a" * 200_000
            else:
                big = "y" * 2000
            with pytest.raises(TTransportException):
                c.echo.echo(big)
        assert other.echo.echo("still served") == "still served"
    out = log.wait_for(CLOSING)
    time.sleep(0.3)
    warnings = log.lines("WARNING")
    assert len(warnings) == 1, out
    assert "max_frame_size" in warnings[0], warnings[0]
    assert TRACEBACK not in log.out


# --------------------------------------------------------------------------
# graceful stop
# --------------------------------------------------------------------------

SLOW_IDL = """
namespace py slowsvc

service Slow {
  string slow(1: double seconds, 2: string tag),
  string fast(),
}
"""

SLOW_APP = """
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from slowsvc import Slow  # noqa: E402

log = logging.getLogger("slowapp")


class Handler:
    def slow(self, seconds, tag):
        log.info("slow-start %s", tag)
        time.sleep(seconds)
        log.info("slow-end %s", tag)
        return "slept " + tag

    def fast(self):
        return "fast"


def make_processor(app_config):
    return Slow.Processor(Handler())
"""


@pytest.fixture
def slow_service(tmp_path):
    (tmp_path / "slow.thrift").write_text(SLOW_IDL)
    (tmp_path / "app.py").write_text(textwrap.dedent(SLOW_APP))
    (tmp_path / "gen").mkdir()
    proc = subprocess.run(
        ["thrift", "--gen", "py", "-out", str(tmp_path / "gen"), str(tmp_path / "slow.thrift")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        yield importlib.import_module("slowsvc.Slow")
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        for name in [m for m in sys.modules if m == "slowsvc" or m.startswith("slowsvc.")]:
            del sys.modules[name]


@pytest.mark.parametrize("kind", ["framed_binary", "header_compact"])
def test_sigterm_during_slow_call(run_server, slow_service, kind):
    Slow = slow_service
    server = run_server(
        ini="[server:main]\nfactory = baseplate.server.thrift\nstop_timeout = 20 seconds\n\n"
        "[app:main]\nfactory = app:make_processor\n",
        env=SERVER_ENV,
    )
    result: Dict[str, object] = {}

    def call() -> None:
        try:
            sock = TSocket.TSocket("127.0.0.1", server.port)
            sock.setTimeout(60_000)
            prot = KINDS[kind](sock)
            prot.trans.open()
            try:
                result["reply"] = Slow.Client(prot).slow(2.0, "t1")
            finally:
                prot.trans.close()
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    # an idle connection must not hold the stop up
    idle = Client(server.port, "framed_binary").open()
    try:
        assert Slow.Client(idle.prot).fast() == "fast"
        t = threading.Thread(target=call, daemon=True)
        t.start()
        server.wait_for_output(r"slow-start t1")
        server.send(signal.SIGTERM)
        server.wait_for_output(r"Received SIGTERM, stopping gracefully")
        # (A second SIGTERM would cut the stop short: test_dispatch.py.)
        t.join(60)
        assert not t.is_alive()
        assert result == {"reply": "slept t1"}
        assert server.wait(60) == 0, server.stdout + server.stderr
    finally:
        idle.close()
    assert "slow-end t1" in server.stdout
    assert TRACEBACK not in server.stdout + server.stderr


def test_repeated_sigterm_still_exits_0(echo_server):
    """Process managers may deliver the stop signal twice (coreutils
    `timeout` sends it to the child and to its process group): the second
    one must not turn a finished graceful stop into death by SIGTERM."""
    server = echo_server()
    with Client(server.port, "framed_binary") as c:
        assert c.echo.echo("before the stop") == "before the stop"
    server.send(signal.SIGTERM)
    server.wait_for_output(r"Received SIGTERM, stopping gracefully")
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0, server.stdout + server.stderr


# --------------------------------------------------------------------------
# the C++ client (libthrift)
# --------------------------------------------------------------------------


def cmake_program() -> str:
    """The venv's cmake (pip's, as `make dev` installs it), else PATH's."""
    beside = Path(sys.executable).parent / "cmake"
    if beside.exists():
        return str(beside)
    found = shutil.which("cmake")
    assert found, "cmake is neither next to the Python interpreter nor on PATH"
    return found


@pytest.fixture(scope="module")
def cpp_client(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("thrift_client_build")
    cmake = cmake_program()
    for cmd in (
        [cmake, "-S", str(CLIENT_PROJECT), "-B", str(build)],
        [cmake, "--build", str(build), "-j", "2"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    binary = build / "thrift_client"
    assert binary.exists()
    return binary


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["framed_binary", "buffered_binary", "framed_compact", "header", "header_compact"])
def test_cpp_client(echo_server, cpp_client, kind):
    server = echo_server()
    log = Log(server)
    proc = subprocess.run(
        [str(cpp_client), "127.0.0.1", str(server.port), kind], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "from c++"
    if kind.startswith("header"):
        assert lines[1] == "Echo-Trace: from-c++"
    # the server is fine afterwards, and said nothing bad about that client
    with Client(server.port, "framed_binary") as c:
        assert c.echo.echo("after c++") == "after c++"
    time.sleep(0.5)
    assert TRACEBACK not in log.out, log.out
    assert not log.lines("ERROR"), log.out
    assert not log.lines("WARNING"), log.out
