"""Native C++ apps: the examples built against the installed SDK and served
end to end, with real HTTP and Thrift clients."""
from __future__ import annotations

import concurrent.futures
import http.client
import os
import shutil
import subprocess
import sys
import textwrap
import time

from pathlib import Path
from typing import Dict

import pytest

from conftest import server_command

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def cmake() -> str:
    beside = Path(sys.executable).parent / "cmake"
    return str(beside) if beside.exists() else shutil.which("cmake")


def build(example: str, build_dir: Path, *extra: str) -> Path:
    sdk = subprocess.run([*server_command(), "--sdk-dir"], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(
        [cmake(), "-S", str(EXAMPLES / example), "-B", str(build_dir), f"-DBaseplateServe_DIR={sdk}", *extra],
        check=True,
        capture_output=True,
    )
    subprocess.run([cmake(), "--build", str(build_dir)], check=True, capture_output=True)
    (lib,) = build_dir.glob("lib*.so")
    return lib


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("native_builds")
    return {
        "http": build("native_http", root / "http"),
        "thrift": build("native_thrift", root / "thrift"),
        "http_v999": build("native_http", root / "http_v999", "-DCMAKE_CXX_FLAGS=-DBASEPLATE_SDK_VERSION=999"),
    }


def http_ini(lib: Path, extra: str = "") -> str:
    return (
        "[server:main]\nfactory = baseplate.server.wsgi\n\n"
        f"[app:main]\nfactory = {lib}:make_app\ngreeting = Howdy\n{extra}"
    )


def thrift_ini(lib: Path) -> str:
    return f"[server:main]\nfactory = baseplate.server.thrift\n\n[app:main]\nfactory = {lib}:make_processor\n"


def request(port: int, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_sdk_dir_holds_headers_and_a_cmake_package():
    sdk = Path(subprocess.run([*server_command(), "--sdk-dir"], check=True, capture_output=True, text=True).stdout.strip())
    assert (sdk / "BaseplateServeConfig.cmake").is_file()
    assert (sdk / "include" / "baseplate" / "plugin.hpp").is_file()
    assert (sdk / "include" / "baseplate" / "http" / "exchange.hpp").is_file()


def test_native_http_app(run_server, libs):
    server = run_server(ini=http_ini(libs["http"]))
    assert "serves HTTP requests without Python" in server.stdout
    # the app's options reached the factory, and its log line is in the stream
    server.wait_for_output(r"INFO \[\d+\] \[-\] hello_native: hello_native ready, greeting Howdy")
    assert request(server.port, "GET", "/") == (200, b"Howdy, from C++!\n")
    big = os.urandom(3 * 1024 * 1024)
    assert request(server.port, "POST", "/echo", body=big) == (200, big)
    assert request(server.port, "GET", "/log", headers={"X-Trace": "trace-77"})[0] == 200
    server.wait_for_output(r"INFO \[\d+\] \[trace-77\] hello_native: native app handled /log")
    # keep-alive on one connection
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for _ in range(100):
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.read() == b"Howdy, from C++!\n"
    conn.close()
    assert server.stop() == 0


def _thrift_clients():
    from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol
    from thrift.transport import THeaderTransport, TTransport

    return {
        "header-binary": lambda s: THeaderProtocol.THeaderProtocol(s, allowed_client_types=[0]),
        "header-compact": lambda s: THeaderProtocol.THeaderProtocol(
            s, allowed_client_types=[0], default_protocol=THeaderTransport.THeaderSubprotocolID.COMPACT
        ),
        "framed-binary": lambda s: TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(s)),
        "buffered-binary": lambda s: TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(s)),
        "framed-compact": lambda s: TCompactProtocol.TCompactProtocol(TTransport.TFramedTransport(s)),
        "buffered-compact": lambda s: TCompactProtocol.TCompactProtocol(TTransport.TBufferedTransport(s)),
    }


@pytest.fixture
def echo_module():
    sys.path.insert(0, str(EXAMPLES / "thrift_echo" / "gen"))
    try:
        from echo import Echo
        from echo.ttypes import EchoError

        yield Echo, EchoError
    finally:
        sys.path.remove(str(EXAMPLES / "thrift_echo" / "gen"))
        for name in [m for m in sys.modules if m == "echo" or m.startswith("echo.")]:
            del sys.modules[name]


def test_native_thrift_app_links_the_libthrift_the_server_loads(run_server, libs, echo_module):
    """The SDK links a Thrift app to the server's own libthrift (the
    system's for a build from source, the bundled copy for a manylinux
    wheel): one libthrift in the process, not two copies with their own
    globals."""
    Echo, _ = echo_module
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TSocket, TTransport

    server = run_server(ini=thrift_ini(libs["thrift"]))
    trans = TTransport.TFramedTransport(TSocket.TSocket("127.0.0.1", server.port))
    trans.open()
    try:
        assert Echo.Client(TBinaryProtocol.TBinaryProtocol(trans)).echo("one copy") == "one copy"
    finally:
        trans.close()
    maps = Path(f"/proc/{server.proc.pid}/maps").read_text()
    paths = {line.split()[-1] for line in maps.splitlines() if "/" in line}
    libthrift = {p for p in paths if os.path.basename(p).startswith(("libthrift-", "libthrift."))}
    assert len(libthrift) == 1, sorted(libthrift)
    assert server.stop() == 0


@pytest.mark.parametrize("kind", list(_thrift_clients()))
def test_native_thrift_app_with_every_client(run_server, libs, echo_module, kind):
    from thrift.Thrift import TApplicationException
    from thrift.transport import TSocket

    Echo, EchoError = echo_module
    server = run_server(ini=thrift_ini(libs["thrift"]))
    assert "serves Thrift requests without Python" in server.stdout
    prot = _thrift_clients()[kind](TSocket.TSocket("127.0.0.1", server.port))
    prot.trans.open()
    try:
        client = Echo.Client(prot)
        if kind.startswith("header"):
            prot.trans.set_header(b"Trace", b"t-1")
        assert client.echo("from python") == "from python"
        if kind.startswith("header"):
            assert prot.trans.get_headers().get(b"Echo-Trace") == b"t-1"
            prot.trans.set_header(b"Trace", b"t-2")
            assert client.request_headers() == {"Trace": "t-2"}
        with pytest.raises(EchoError) as declared:
            client.fail_declared("nope")
        assert declared.value.message == "nope"
        with pytest.raises(TApplicationException) as undeclared:
            client.fail_undeclared("boom")
        # Apache Thrift's C++ processors report an undeclared exception as
        # UNKNOWN with its what(); the connection stays usable.
        assert undeclared.value.type == TApplicationException.UNKNOWN
        assert undeclared.value.message == "boom"
        client.remember(kind)  # oneway
        assert client.recall() == kind
    finally:
        prot.trans.close()
    assert server.stop() == 0


SITECUSTOMIZE = """
import os, sys, threading, time

def _hold():
    marker = os.path.join(os.getcwd(), "hold-gil")
    while not os.path.exists(marker):
        time.sleep(0.05)
    spans = []
    deadline = time.perf_counter() + 3.0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        sum(range(20_000_000))  # one C call: the GIL is never released during it
        spans.append((start, time.perf_counter()))
    with open(os.path.join(os.getcwd(), "held.txt"), "w") as f:
        f.write(repr(spans))

threading.Thread(target=_hold, daemon=True).start()
"""


def test_native_requests_never_wait_for_the_gil(run_server, libs, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    server = run_server(ini=http_ini(libs["http"]), env={"PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    def one() -> float:
        start = time.perf_counter()
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.read() == b"Howdy, from C++!\n"
        return time.perf_counter() - start

    baseline = [one() for _ in range(200)]
    (tmp_path / "hold-gil").touch()
    latencies = []
    timeline = []
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        timeline.append(time.perf_counter())
        latencies.append(one())
    conn.close()
    deadline = time.monotonic() + 30
    while not (tmp_path / "held.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    spans = eval((tmp_path / "held.txt").read_text())
    # The holder really held the GIL in long stretches...
    assert max(b - a for a, b in spans) > 0.2, spans
    # ...and requests made inside those stretches were answered at once.
    inside = [lat for t, lat in zip(timeline, latencies) if any(a < t and t + lat < b for a, b in spans)]
    assert len(inside) > 50, (len(inside), len(latencies))
    assert max(inside) < 0.1, max(inside)
    assert len(latencies) > 100
    assert server.stop() == 0


def test_native_app_built_against_another_sdk_is_refused(run_server, libs):
    server = run_server(ini=http_ini(libs["http_v999"]), wait=False)
    assert server.wait() == 2
    err = server.stderr.strip().splitlines()
    assert len(err) == 1, server.stderr
    assert err[0].startswith("baseplate-serve: error: app.ini: [app:main] factory: ")
    assert "built against SDK version 999; this server has SDK version 2" in err[0]


@pytest.mark.parametrize(
    "case, status",
    # As for a Python factory: a library or factory that is not there exits 2
    # (a config error), the app's own code failing exits 1.
    [("missing-file", 2), ("missing-factory", 2), ("not-a-native-app", 2), ("factory-throws", 1), ("wrong-kind", 1)],
)
def test_load_errors_are_one_line_and_exit_status(run_server, libs, tmp_path, case, status):
    if case == "missing-file":
        ini, expected = http_ini(tmp_path / "libnothere.so"), "cannot load native app"
    elif case == "missing-factory":
        ini, expected = http_ini(libs["http"]).replace(":make_app", ":no_such_factory"), "has no factory no_such_factory"
    elif case == "not-a-native-app":
        libz = next(Path("/").glob("usr/lib/*/libz.so.1"))
        ini, expected = http_ini(libz).replace("libz.so.1:make_app", "libz.so.1:make_app"), "is not a baseplate-serve native app"
    elif case == "factory-throws":
        ini, expected = http_ini(libs["http"], "fail_on_start = true\n"), "failed: asked to fail by fail_on_start"
    else:
        ini = thrift_ini(libs["http"]).replace(":make_processor", ":make_app")
        expected = "returned an HTTP handler, but [server:main] factory = baseplate.server.thrift needs a Thrift processor"
    server = run_server(ini=ini, wait=False)
    assert server.wait() == status
    err = server.stderr.strip().splitlines()
    assert len(err) == 1, server.stderr
    assert err[0].startswith("baseplate-serve: error: app.ini: [app:main] factory: "), err[0]
    assert expected in err[0], err[0]


def test_native_app_with_io_threads_0_uses_one_io_thread(run_server, libs):
    # A native app has no Python thread to run the loop on: io_threads = 0
    # is used as 1, with a line that says so (not an error: one INI may
    # serve a Python app or a native one).
    ini = http_ini(libs["http"]).replace("[server:main]\n", "[server:main]\nio_threads = 0\n", 1)
    server = run_server(ini=ini)
    assert "io_threads = 0 (inline I/O) needs gevent dispatch and a Python app; this native app uses 1 I/O thread" in (
        server.stdout
    )
    assert request(server.port, "GET", "/") == (200, b"Howdy, from C++!\n")
    assert server.stop() == 0
