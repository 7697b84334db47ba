"""gevent dispatch (the default): Python requests run in greenlets on the
hub, so waiting apps do not hold up one another."""
from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import socket
import textwrap
import threading
import time

import pytest

APP = """
import contextvars
import hashlib
import json
import socket
import time

import gevent
import gevent.local

local = gevent.local.local()
request_var = contextvars.ContextVar("request_var", default=None)


def make_app(app_config):
    slow_port = int(app_config.get("slow_port", "0"))

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/gevent-sleep":
            gevent.sleep(1)
        elif path == "/time-sleep":
            time.sleep(1)  # monkey-patched: cooperative
        elif path == "/socket":
            with socket.create_connection(("127.0.0.1", slow_port)) as s:
                s.sendall(b"ping")
                data = s.recv(100)
            body = data
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [body]
        elif path == "/local":
            mine = environ["QUERY_STRING"]
            # Each request runs in a fresh context; a gevent.local value is
            # never shared by concurrent requests (checked after the sleep).
            assert request_var.get() is None, "context variable leaked in"
            local.value = mine
            request_var.set(mine)
            gevent.sleep(0.2)
            seen = (local.value, request_var.get())
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(seen).encode()]
        elif path == "/upload":
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = environ["wsgi.input"].read(65536)
                if not chunk:
                    break
                n += len(chunk)
                h.update(chunk)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{n} {h.hexdigest()}".encode()]
        elif path == "/download":
            def gen():
                block = b"x" * 65536
                for _ in range(int(environ["QUERY_STRING"])):
                    yield block
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return gen()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app
"""


def _get(port: int, path: str, timeout: float = 30) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        return resp.read()
    finally:
        conn.close()


def _concurrently(port: int, paths, workers: int):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        started = time.monotonic()
        results = list(pool.map(lambda p: _get(port, p), paths))
        return results, time.monotonic() - started


@pytest.fixture
def slow_backend():
    """A local server that answers "pong" one second after each request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.recv(100)
            time.sleep(1)
            conn.sendall(b"pong")

    def accept_loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("path", ["/gevent-sleep", "/time-sleep"])
def test_200_sleeping_requests_run_concurrently(run_server, path):
    server = run_server(APP)
    assert "Python requests run on the gevent hub" in server.stdout
    results, elapsed = _concurrently(server.port, [path] * 200, 200)
    assert results == [b"ok"] * 200
    # One second of sleep each; serially this would take minutes.
    assert elapsed < 3.0, elapsed
    assert server.stop() == 0


def test_200_requests_waiting_on_a_slow_socket(run_server, slow_backend):
    server = run_server(APP, app_options=f"slow_port = {slow_backend}\n")
    results, elapsed = _concurrently(server.port, ["/socket"] * 200, 200)
    assert results == [b"pong"] * 200
    assert elapsed < 3.0, elapsed
    assert server.stop() == 0


def test_greenlet_locals_do_not_leak_between_requests(run_server):
    server = run_server(APP)
    paths = [f"/local?{i}" for i in range(100)]
    results, _ = _concurrently(server.port, paths, 100)
    for i, body in enumerate(results):
        assert json.loads(body) == [str(i), str(i)]
    # Sequential requests reuse worker greenlets: context variables start fresh.
    for i in range(20):
        assert json.loads(_get(server.port, f"/local?s{i}")) == [f"s{i}", f"s{i}"]
    assert "leaked" not in server.stdout
    assert server.stop() == 0


def test_streams_in_both_directions_while_others_are_served(run_server):
    server = run_server(APP)
    size = 64 * 1024 * 1024
    block = bytes(range(256)) * 256
    expected = hashlib.sha256()

    def body():
        sent = 0
        while sent < size:
            expected.update(block)
            sent += len(block)
            yield block

    result = {}

    def upload() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("POST", "/upload", body=body(), headers={"Content-Length": str(size)})
        result["upload"] = conn.getresponse().read()
        conn.close()

    def download() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.request("GET", "/download?1024")
        resp = conn.getresponse()
        n = 0
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
            time.sleep(0.001)  # a slow reader: the server must wait for it
        result["download"] = n
        conn.close()

    threads = [threading.Thread(target=upload), threading.Thread(target=download)]
    for t in threads:
        t.start()
    # Meanwhile other requests are answered.
    answered = 0
    while any(t.is_alive() for t in threads):
        assert _get(server.port, "/", timeout=10) == b"ok"
        answered += 1
    for t in threads:
        t.join()
    assert result["upload"] == f"{size} {expected.hexdigest()}".encode()
    assert result["download"] == 1024 * 65536
    assert answered > 0
    assert server.stop() == 0


def test_threads_dispatch_still_serves(run_server):
    server = run_server(APP, server_options="dispatch = threads\n")
    assert "Python requests run on worker threads" in server.stdout
    assert _get(server.port, "/") == b"ok"
    assert server.stop() == 0


def test_bad_dispatch_value_is_a_config_error(run_server):
    server = run_server(APP, server_options="dispatch = fibers\n", wait=False)
    assert server.wait() == 2
    assert "[server:main] dispatch" in server.stderr


THRIFT_IDL = """
service Sleeper {
  string nap(1: i32 ms),
}
"""

THRIFT_APP = """
import os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from sleeper import Sleeper


class Handler:
    def nap(self, ms):
        time.sleep(ms / 1000.0)  # monkey-patched: cooperative
        return "rested"


def make_processor(app_config):
    return Sleeper.Processor(Handler())
"""


def test_thrift_method_that_sleeps_runs_concurrently(run_server, tmp_path):
    import subprocess
    import sys

    (tmp_path / "sleeper.thrift").write_text(THRIFT_IDL)
    (tmp_path / "gen").mkdir()
    subprocess.run(["thrift", "--gen", "py", "-out", "gen", "sleeper.thrift"], cwd=tmp_path, check=True)
    (tmp_path / "app.py").write_text(textwrap.dedent(THRIFT_APP))
    ini = "[server:main]\nfactory = baseplate.server.thrift\n\n[app:main]\nfactory = app:make_processor\n"
    server = run_server(ini=ini)
    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        from sleeper import Sleeper
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TSocket, TTransport

        def call(_):
            trans = TTransport.TFramedTransport(TSocket.TSocket("127.0.0.1", server.port))
            trans.open()
            try:
                return Sleeper.Client(TBinaryProtocol.TBinaryProtocol(trans)).nap(1000)
            finally:
                trans.close()

        with concurrent.futures.ThreadPoolExecutor(100) as pool:
            started = time.monotonic()
            results = list(pool.map(call, range(100)))
            elapsed = time.monotonic() - started
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        sys.modules.pop("sleeper", None)
        sys.modules.pop("sleeper.Sleeper", None)
        sys.modules.pop("sleeper.ttypes", None)
        sys.modules.pop("sleeper.constants", None)
    assert results == ["rested"] * 100
    assert elapsed < 3.0, elapsed
    assert server.stop() == 0
