"""io_threads = 0: the gevent hub runs the core's event loop itself, and
requests run in greenlets beside it (no I/O thread). Each test sets
io_threads = 0 in its own INI, whatever BPS_TEST_IO_THREADS says."""
from __future__ import annotations

import concurrent.futures
import http.client
import signal
import socket
import threading
import time

import pytest

from clients import raw_exchange

APP = """
import http.client
import time

import gevent


def make_app(app_config):
    upstream = int(app_config.get("upstream_port", "0"))

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/nap":
            gevent.sleep(1)
            body = b"rested"
        elif path == "/slow":
            time.sleep(2)  # monkey-patched: cooperative
            body = b"slow done"
        elif path == "/upstream":
            # An outgoing HTTP call over gevent's sockets, to another server.
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=10)
            conn.request("GET", "/nap")
            answer = conn.getresponse().read()
            conn.close()
            body = b"upstream said " + answer
        elif path == "/spin":
            end = time.monotonic() + 15
            while time.monotonic() < end:
                pass
            body = b"spun"
        elif path == "/echo":
            body = environ["wsgi.input"].read()
        else:
            body = b"hello"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app
"""

INLINE = "dispatch = gevent\nio_threads = 0\n"


def _get(port: int, path: str, timeout: float = 30, body: bytes = b"") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST" if body else "GET", path, body=body or None)
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        return resp.read()
    finally:
        conn.close()


def test_logs_that_the_hub_runs_the_io(run_server):
    server = run_server(APP, server_options=INLINE)
    assert "and so does the network I/O (io_threads = 0)" in server.stdout
    assert _get(server.port, "/") == b"hello"
    big = bytes(range(256)) * 4096  # 1 MiB: many reads, each a wait for the loop
    assert _get(server.port, "/echo", body=big) == big


def test_a_sleeping_greenlet_does_not_hold_up_the_others(run_server):
    server = run_server(APP, server_options=INLINE)
    with concurrent.futures.ThreadPoolExecutor(51) as pool:
        started = time.monotonic()
        naps = [pool.submit(_get, server.port, "/nap") for _ in range(50)]
        time.sleep(0.2)  # the naps are under way
        quick_started = time.monotonic()
        assert _get(server.port, "/") == b"hello"
        quick = time.monotonic() - quick_started
        assert all(f.result() == b"rested" for f in naps)
        elapsed = time.monotonic() - started
    assert quick < 0.5, f"a quick request took {quick:.2f} s while 50 greenlets slept"
    assert elapsed < 5, f"50 one-second naps took {elapsed:.1f} s: they did not run concurrently"


def test_request_calls_another_local_server(run_server, tmp_path):
    upstream_dir = tmp_path / "upstream"
    upstream_dir.mkdir()
    (upstream_dir / "app.py").write_text(APP)
    from conftest import Server, free_port

    up_port = free_port()
    (upstream_dir / "app.ini").write_text(
        "[server:main]\nfactory = baseplate.server.wsgi\n" + INLINE + "\n[app:main]\nfactory = app:make_app\n"
    )
    upstream = Server(["--bind", f"127.0.0.1:{up_port}", "app.ini"], upstream_dir, None, up_port).wait_listening()
    try:
        server = run_server(APP, server_options=INLINE, app_options=f"upstream_port = {up_port}\n")
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda _: _get(server.port, "/upstream"), range(20)))
            elapsed = time.monotonic() - started
        assert answers == [b"upstream said rested"] * 20
        # 20 calls of 1 s each, concurrently on both sides.
        assert elapsed < 6, f"20 upstream calls took {elapsed:.1f} s"
    finally:
        upstream.stop()


def test_stop_lets_requests_in_flight_finish(run_server):
    server = run_server(APP, server_options=INLINE + "stop_timeout = 10 seconds\n")
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        slow = [pool.submit(_get, server.port, "/slow") for _ in range(10)]
        time.sleep(0.5)
        server.send(signal.SIGTERM)
        assert [f.result() for f in slow] == [b"slow done"] * 10
    assert server.wait(10) == 0
    assert "Stopped" in server.stdout


def test_stop_timeout_cuts_requests_in_flight(run_server):
    server = run_server(APP, server_options=INLINE + "stop_timeout = 1 second\n")
    errors = []

    def nap_forever() -> None:
        try:
            _get(server.port, "/slow", timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    # /slow is 2 s, past the 1 s stop_timeout.
    clients = [threading.Thread(target=nap_forever) for _ in range(5)]
    for c in clients:
        c.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0
    took = time.monotonic() - started
    for c in clients:
        c.join(10)
    assert took < 3, f"the stop took {took:.1f} s with stop_timeout = 1 s"
    assert len(errors) == 5
    assert "closed 5 connection(s) with requests in flight" in server.stdout


def test_stop_is_bounded_while_a_request_spins(run_server):
    # The hub is stuck in the app; the signal thread still arms the exit
    # deadline and answers SIGUSR1.
    server = run_server(APP, server_options=INLINE + "stop_timeout = 1 second\n")
    spinner = threading.Thread(target=lambda: _get_ignoring_errors(server.port, "/spin"), daemon=True)
    spinner.start()
    time.sleep(0.5)
    server.send(signal.SIGUSR1)
    server.wait_for_output(r"/spin|in app|_spin|while time.monotonic", timeout=5)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    server.wait(15)
    took = time.monotonic() - started
    assert took < 4, f"stop took {took:.1f} s while the hub spun"


def _get_ignoring_errors(port: int, path: str) -> None:
    try:
        _get(port, path, timeout=30)
    except (OSError, http.client.HTTPException):
        pass


def test_header_timeout_closes_a_stalled_connection(run_server):
    # Deadlines are the loop's timers: they must fire with the hub running the loop.
    server = run_server(APP, server_options=INLINE + "header_timeout = 1 second\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        data = s.recv(1000)
        while data and b"\r\n\r\n" not in data:
            more = s.recv(1000)
            if not more:
                break
            data += more
        took = time.monotonic() - started
    assert took < 5, f"a stalled header was held {took:.1f} s with header_timeout = 1 s"
    # The server keeps serving.
    assert raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status == 200


# The defaults, whatever BPS_TEST_IO_THREADS says: inline I/O where the hub
# can run the loop, one I/O thread elsewhere, and no INFO line about it.
def test_gevent_default_is_inline(run_server):
    server = run_server(APP, server_options="dispatch = gevent\n", io_threads_override=False)
    assert "Python requests run on the gevent hub, and so does the network I/O (io_threads = 0)" in server.stdout
    assert "bps-io-0" not in _thread_names(server.proc.pid)
    assert _get(server.port, "/") == b"hello"


def test_threads_default_keeps_its_io_thread(run_server):
    server = run_server(APP, server_options="dispatch = threads\n", io_threads_override=False)
    assert "io_threads" not in server.stdout
    assert _get(server.port, "/") == b"hello"
    assert "bps-io-0" in _thread_names(server.proc.pid)


def test_explicit_io_threads_1_under_gevent_keeps_its_io_thread(run_server):
    server = run_server(APP, server_options="dispatch = gevent\nio_threads = 1\n", io_threads_override=False)
    assert "and so does the network I/O" not in server.stdout
    assert _get(server.port, "/") == b"hello"
    assert "bps-io-0" in _thread_names(server.proc.pid)


def _thread_names(pid: int) -> str:
    import os

    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            names.append(f.read().strip())
    return " ".join(names)


@pytest.mark.parametrize("options", ["dispatch = threads\nio_threads = 0\n"])
def test_threads_dispatch_uses_one_io_thread(run_server, options):
    server = run_server(APP, server_options=options)
    assert "io_threads = 0 (inline I/O) needs gevent dispatch and a Python app; threads dispatch uses 1 I/O thread" in (
        server.stdout
    )
    assert _get(server.port, "/") == b"hello"


def _cpu_seconds(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("io_threads", ["0", "1"])
def test_idle_server_stays_idle_after_core_events(run_server, io_threads):
    # Each access-log line is a core event the hub handles; once handled,
    # the main greenlet must go back to sleeping, not spin.
    server = run_server(APP, server_options=f"dispatch = gevent\nio_threads = {io_threads}\naccess_log = true\n")
    for _ in range(3):
        assert _get(server.port, "/") == b"hello"
    server.wait_for_output(r'"GET /" 200')
    time.sleep(0.5)
    before = _cpu_seconds(server.proc.pid)
    time.sleep(2)
    used = _cpu_seconds(server.proc.pid) - before
    assert used < 0.5, f"an idle server used {used:.2f} s of CPU in 2 s"
