"""Custom server factories and the pywsgi ``handler`` path, end to end.

A custom ``[server:NAME] factory`` runs on the gevent hub when dispatch is
gevent or the server is a gevent server, else on threads; it stops with the
one stop sequence (drain, stop(), stop_timeout, a second signal cuts the
wait, SIGHUP is a graceful stop); a server whose own code raises ends the
command with status 1. The pywsgi ``handler`` path stops the same way and
within drain_time + stop_timeout + 1 s, whatever its requests do.
"""
from __future__ import annotations

import re
import signal
import time

import pytest

from test_operations import APP, CUSTOM_INI, CUSTOM_START_STOP, HANDLER_APP, Request, connect_refused, get

#: A factory that returns gevent's own WSGI server, as baseplate.py users write
#: them (``[server:main] factory = mymodule:make_server``).
GEVENT_FACTORY = r'''
import logging

from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

log = logging.getLogger("customserver")


class TaggedServer(WSGIServer):
    def stop(self, timeout=None):
        log.info("custom stop called")
        super().stop(timeout)


def make_server(server_config, listener, app):
    server = TaggedServer(listener, application=app, spawn=Pool(), log=None)
    server.stop_timeout = 30
    return server
'''

#: A server of its own kind (the standard library's wsgiref on a threading
#: socketserver) driven by serve_forever(); its stop() waits for its requests.
THREADED_FACTORY = r'''
import logging
import socketserver

from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

log = logging.getLogger("customserver")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class ListenerServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, listener, app):
        socketserver.BaseServer.__init__(self, listener.getsockname(), QuietHandler)
        self.socket = listener
        self.server_name, self.server_port = "127.0.0.1", listener.getsockname()[1]
        self.setup_environ()
        self.set_app(app)

    def serve_forever(self, poll_interval=0.1):
        log.info("custom serve_forever called")
        super().serve_forever(poll_interval)

    def stop(self):
        log.info("custom stop called")
        self.shutdown()
        self.server_close()  # joins the request threads


def make_server(server_config, listener, app):
    return ListenerServer(listener, app)
'''

#: Servers whose own code fails.
FAILING_FACTORY = r'''
import time


class RaisesInServeForever:
    def __init__(self, listener):
        self.listener = listener

    def serve_forever(self):
        time.sleep(0.5)
        raise RuntimeError("the accept loop broke: kaboom")

    def stop(self):
        pass


class RaisesInStart:
    def start(self):
        raise OSError("cannot start: kaboom")

    def stop(self):
        pass


class ReturnsAtOnce:
    def serve_forever(self):
        time.sleep(0.5)


def make_serve_forever(server_config, listener, app):
    return RaisesInServeForever(listener)


def make_start(server_config, listener, app):
    return RaisesInStart()


def make_returns(server_config, listener, app):
    return ReturnsAtOnce()
'''

#: The app of APP plus requests that never end the way a stop wants: one
#: that swallows the greenlet kill and goes on sleeping, one that spins on
#: the CPU (the hub never runs while it does).
STUBBORN_APP = (
    HANDLER_APP
    + r'''

import time as _time

_inner = make_app


def make_app(app_config):
    app = _inner(app_config)

    def stubborn(environ, start_response):
        if environ["PATH_INFO"] == "/stubborn":
            log.info("stubborn-start")
            end = _time.monotonic() + 60
            while _time.monotonic() < end:
                try:
                    _time.sleep(0.1)
                except BaseException:
                    log.info("stubborn ignores %s", "the kill")
        if environ["PATH_INFO"] == "/spin":
            log.info("spin-start")
            end = _time.monotonic() + 60
            while _time.monotonic() < end:
                pass
        return app(environ, start_response)

    return stubborn
'''
)

DISPATCHES = ["gevent", "threads"]
KINDS = {
    # kind: (module name, its code)
    "gevent-server": ("gevent_factory", GEVENT_FACTORY),
    "threaded-server": ("threaded_factory", THREADED_FACTORY),
}


def start_custom(run_server, tmp_path, kind: str, dispatch: str, options: str = "", app: str = APP):
    module, code = KINDS[kind]
    (tmp_path / f"{module}.py").write_text(code)
    ini = CUSTOM_INI.format(f"{module}:make_server", "hi", f"dispatch = {dispatch}\n{options}")
    return run_server(app, ini=ini)


# --------------------------------------------------------------------------- where custom servers run


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_gevent_server_factory_serves_and_stops(run_server, tmp_path, dispatch):
    server = start_custom(run_server, tmp_path, "gevent-server", dispatch, "stop_timeout = 20\n")
    # It serves: the hub runs (before, connections waited in the backlog).
    status, _headers, body = get(server.port, "/first", timeout=10)
    assert status == 200 and body.startswith(b"fast /first pid="), body
    assert "Custom server TaggedServer runs on the gevent hub" in server.stdout
    if dispatch == "threads":
        # Not monkey-patched, and it says so.
        assert re.search(r"WARNING .*dispatch = threads, but the server factory returned a gevent server", server.stdout)

    slow = Request(server.port, "/slow?id=inflight&s=2")
    slow.start()
    server.wait_for_output(r"slow-start inflight")
    started = time.monotonic()
    server.send(signal.SIGTERM)
    refused = connect_refused(server.port)
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None and slow.result == (200, b"slow done inflight"), (slow.result, slow.error)
    assert refused, "a connection made after the stop signal was not refused"
    assert time.monotonic() - started < 15
    out = server.stdout
    assert "Received SIGTERM, stopping gracefully" in out and "custom stop called" in out and "Stopped" in out, out
    assert "Traceback" not in out and server.stderr == "", out + server.stderr


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_threaded_serve_forever_server_serves_and_stops(run_server, tmp_path, dispatch):
    server = start_custom(run_server, tmp_path, "threaded-server", dispatch, "stop_timeout = 20\n")
    status, _headers, body = get(server.port, "/first", timeout=10)
    assert status == 200 and body.startswith(b"fast /first pid="), body
    where = "the gevent hub" if dispatch == "gevent" else "threads"
    assert f"Custom server ListenerServer runs on {where}" in server.stdout

    slow = Request(server.port, "/slow?id=inflight&s=2")
    slow.start()
    server.wait_for_output(r"slow-start inflight")
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None and slow.result == (200, b"slow done inflight"), (slow.result, slow.error)
    assert "custom stop called" in server.stdout and "Stopped" in server.stdout
    assert "Traceback" not in server.stdout and server.stderr == ""


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_start_stop_server_serves_and_stops(run_server, tmp_path, dispatch):
    (tmp_path / "custom_start_stop.py").write_text(CUSTOM_START_STOP)
    server = run_server(
        APP, ini=CUSTOM_INI.format("custom_start_stop:make_custom_server", "hi", f"dispatch = {dispatch}\n")
    )
    status, _headers, body = get(server.port, "/via-custom", timeout=10)
    assert status == 200 and body.startswith(b"custom hi: fast /via-custom pid="), body
    where = "the gevent hub" if dispatch == "gevent" else "threads"
    assert f"Custom server StartStopServer runs on {where}" in server.stdout
    assert server.stop(signal.SIGTERM) == 0, server.stdout + server.stderr
    assert "custom stop called" in server.stdout and "Stopped" in server.stdout
    assert server.stderr == ""


# --------------------------------------------------------------------------- a server whose own code fails


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize(
    "factory, logged, error",
    [
        (
            "make_serve_forever",
            r"ERROR .*RaisesInServeForever\.serve_forever\(\) raised",
            "RaisesInServeForever.serve_forever() raised RuntimeError: the accept loop broke: kaboom",
        ),
        ("make_start", r"ERROR .*RaisesInStart\.start\(\) raised", "RaisesInStart.start() raised OSError"),
        (
            "make_returns",
            r"ERROR .*ReturnsAtOnce\.serve_forever\(\) returned before any stop signal",
            "ReturnsAtOnce.serve_forever() returned before any stop signal",
        ),
    ],
    ids=["serve_forever-raises", "start-raises", "serve_forever-returns"],
)
def test_a_failing_custom_server_exits_non_zero(run_server, tmp_path, dispatch, factory, logged, error):
    (tmp_path / "failing.py").write_text(FAILING_FACTORY)
    server = run_server(
        APP, ini=CUSTOM_INI.format(f"failing:{factory}", "hi", f"dispatch = {dispatch}\n"), wait=False
    )
    status = server.wait(30)
    out = server.stdout
    assert status == 1, out + server.stderr
    assert re.search(logged, out), out
    if "returned" not in error:
        # The traceback is logged, with the server's own frame.
        assert "Traceback (most recent call last)" in out and "kaboom" in out, out
    assert f"baseplate-serve: error: {error}" in server.stderr, server.stderr
    assert "Stopped" not in out, out


# --------------------------------------------------------------------------- SIGHUP and a second stop signal


def start_kind(run_server, tmp_path, kind: str, options: str, app: str = HANDLER_APP):
    if kind == "handler":
        return run_server(app, server_options=f"handler = app:TaggingHandler\n{options}")
    custom_kind, dispatch = kind.rsplit("-", 1)
    return start_custom(run_server, tmp_path, custom_kind, dispatch, options, app=app)


STOP_KINDS = ["gevent-server-gevent", "gevent-server-threads", "threaded-server-threads", "handler"]


@pytest.mark.parametrize("kind", STOP_KINDS)
def test_sighup_is_a_graceful_stop(run_server, tmp_path, kind):
    server = start_kind(run_server, tmp_path, kind, "stop_timeout = 20\n")
    slow = Request(server.port, "/slow?id=hup&s=1")
    slow.start()
    server.wait_for_output(r"slow-start hup")
    server.send(signal.SIGHUP)
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None and slow.result == (200, b"slow done hup"), (slow.result, slow.error)
    assert re.search(r"INFO .*Received SIGHUP, stopping gracefully", server.stdout), server.stdout


@pytest.mark.parametrize("kind", STOP_KINDS)
def test_a_second_stop_signal_cuts_the_drain(run_server, tmp_path, kind):
    server = start_kind(run_server, tmp_path, kind, "drain_time = 30\nstop_timeout = 20\n")
    assert get(server.port, "/before", timeout=10)[0] == 200
    server.send(signal.SIGTERM)
    server.wait_for_output(r"Draining for 30 s")
    started = time.monotonic()
    server.send(signal.SIGTERM)
    status = server.wait(15)
    assert status == 0, server.stdout + server.stderr
    assert time.monotonic() - started < 10
    assert re.search(r"WARNING .*Received SIGTERM during the stop", server.stdout), server.stdout


# --------------------------------------------------------------------------- the stop is bounded


@pytest.mark.parametrize(
    "kind, path, started_line, status",
    [
        # Greenlets that survive the kill do not keep the process: it exits 0 at the end of the stop.
        ("handler", "/stubborn", "stubborn-start", 0),
        ("gevent-server-gevent", "/stubborn", "stubborn-start", 0),
        # A thread that never ends keeps Python from exiting: the exit deadline ends it.
        ("threaded-server-threads", "/slow?id=stuck&s=3600", "slow-start stuck", 1),
    ],
)
def test_a_request_that_never_ends_does_not_outlive_the_deadline(run_server, tmp_path, kind, path, started_line, status):
    # drain_time 1 s + stop_timeout 2 s + 1 s.
    server = start_kind(run_server, tmp_path, kind, "drain_time = 1\nstop_timeout = 2\n", app=STUBBORN_APP)
    stuck = Request(server.port, path)
    stuck.start()
    server.wait_for_output(started_line)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(30) == status, server.stdout + server.stderr
    elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 4 + 3, elapsed
    assert stuck.done.wait(10) and (stuck.result is None or stuck.result[0] != 200), stuck.result
    if status:
        assert "stop exceeded drain_time + stop_timeout + 1 s" in server.stderr, server.stderr
    else:
        assert re.search(r"WARNING .*closed 1 connection", server.stdout), server.stdout


@pytest.mark.parametrize("kind", ["handler", "gevent-server-gevent"])
def test_a_request_spinning_on_the_cpu_does_not_outlive_the_deadline(run_server, tmp_path, kind):
    # The hub never runs while the request spins: the stop signal must still
    # end the process within drain_time + stop_timeout + 1 s.
    server = start_kind(run_server, tmp_path, kind, "drain_time = 1\nstop_timeout = 2\n", app=STUBBORN_APP)
    spin = Request(server.port, "/spin")
    spin.start()
    server.wait_for_output(r"spin-start")
    time.sleep(0.2)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    status = server.wait(30)
    elapsed = time.monotonic() - started
    assert elapsed < 4 + 4, elapsed
    assert status == 1, server.stdout + server.stderr
    assert "stop exceeded drain_time + stop_timeout + 1 s" in server.stderr, server.stderr


# --------------------------------------------------------------------------- gevent's pywsgi: idle keep-alive connections


def read_response(sock, deadline: float) -> bytes:
    """One HTTP response with a Content-Length, read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + int(
        re.search(rb"(?i)content-length: *(\d+)", data).group(1)
    ):
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


# (Not with dispatch = threads: unpatched, the app's time.sleep blocks the hub and the stop with it.)
@pytest.mark.parametrize("kind", ["handler", "gevent-server-gevent"])
def test_stop_closes_idle_keepalive_connections_and_answers_with_connection_close(run_server, tmp_path, kind):
    import socket
    import threading

    server = start_kind(run_server, tmp_path, kind, "stop_timeout = 20\n")
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    idle.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(idle, time.monotonic() + 10).startswith(b"HTTP/1.1 200")

    busy = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    busy.sendall(b"GET /slow?id=busy&s=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    server.wait_for_output(r"slow-start busy")
    answer = {}

    def read_busy():
        answer["data"] = read_response(busy, time.monotonic() + 30)

    reader = threading.Thread(target=read_busy, daemon=True)
    reader.start()
    started = time.monotonic()
    server.send(signal.SIGTERM)
    # The idle keep-alive connection is closed at once, not at stop_timeout.
    idle.settimeout(10)
    assert idle.recv(1) == b""
    closed_after = time.monotonic() - started
    reader.join(30)
    # The request in flight finishes, told that the connection closes.
    head = answer["data"].split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200") and re.search(rb"(?im)^connection: close\r?$", head), head
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert closed_after < 1.5, closed_after
    assert time.monotonic() - started < 10  # not stop_timeout (20 s)
    assert not re.search(r"closed \d+ connection", server.stdout), server.stdout
    idle.close()
    busy.close()
