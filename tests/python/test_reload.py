"""``--reload``, end to end: what crosses the re-exec and what does not.

The installed CLI in a subprocess, real clients on loopback: client
connections open at a reload are closed (not carried into the new process),
same-size edits within one second each take effect with bytecode writing on,
and a listener of a process manager (Einhorn, systemd socket activation) is
the one served after the reload. The basic reload (config file, modules, a
syntax error) is in test_operations.py.
"""
from __future__ import annotations

import os
import signal
import socket
import textwrap
import time

from pathlib import Path

import pytest

from conftest import START_TIMEOUT, free_port, server_command
from test_operations import (  # noqa: F401  (spawn and fake_einhorn are fixtures)
    RELOAD_BOUND,
    connect_refused,
    fake_einhorn,
    get,
    is_non_blocking,
    launch_socket_activated,
    poll_body,
    read_ack,
    spawn,
)

#: An app whose body is its version; every version has the same file size.
VERSIONED_APP = """
def make_app(app_config):
    def app(environ, start_response):
        body = b"v{n}"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""

INI = "[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = app:make_app\n"

#: Bytecode writing on, whatever the environment running the tests says.
BYTECODE_ON = {"PYTHONDONTWRITEBYTECODE": ""}


def write_version(tmp_path: Path, n: int, mtime_ns: int = 0) -> None:
    """app.py at version ``n``; with ``mtime_ns``, dated back to it (an edit
    within the same second as the last compile, as far as a .pyc can tell)."""
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(VERSIONED_APP.format(n=n)))
    if mtime_ns:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def open_sockets(pid: int) -> int:
    """How many sockets the process holds."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def keep_alive_client(port: int) -> socket.socket:
    """A connection that has had one response and stays open (HTTP/1.1)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"GET /before HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while not data.endswith(b"v1"):
        chunk = client.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    return client


def closed_within(client: socket.socket, seconds: float) -> bool:
    """True when the server closes ``client`` within ``seconds``."""
    client.settimeout(seconds)
    try:
        return client.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.mark.parametrize("dispatch", ["gevent", "threads"])
def test_reload_closes_client_connections_and_leaks_no_socket(run_server, tmp_path, dispatch):
    write_version(tmp_path, 1)
    server = run_server(ini=INI.replace("\n\n", f"\ndispatch = {dispatch}\n\n", 1), args=["--reload"])
    assert get(server.port)[2] == b"v1"
    time.sleep(0.2)  # that connection closed on the server's side too
    sockets_at_start = open_sockets(server.proc.pid)

    client = keep_alive_client(server.port)
    try:
        write_version(tmp_path, 2)
        server.wait_for_output(r"Reloading: ", RELOAD_BOUND)
        seen = time.monotonic()
        # Not carried into the new process: its client sees the close.
        assert closed_within(client, 2), "the connection open at the reload is still open 2 s after it"
        assert time.monotonic() - seen <= 2.0
    finally:
        client.close()
    assert poll_body(server.port, b"v2", RELOAD_BOUND) is None, server.stdout
    time.sleep(0.2)
    assert open_sockets(server.proc.pid) == sockets_at_start, os.listdir(f"/proc/{server.proc.pid}/fd")
    assert server.stop() == 0, server.stderr


def test_quick_same_size_edits_each_take_effect_with_bytecode_writing_on(run_server, tmp_path):
    write_version(tmp_path, 1)
    server = run_server(ini=INI, args=["--reload"], env=BYTECODE_ON)
    assert get(server.port)[2] == b"v1"
    assert list((tmp_path / "__pycache__").glob("app.*.pyc")), "bytecode was not written: the test shows nothing"
    first = (tmp_path / "app.py").stat()
    for n in range(2, 7):
        # Same size, and the same mtime as the version compiled before.
        write_version(tmp_path, n, first.st_mtime_ns)
        assert (tmp_path / "app.py").stat().st_size == first.st_size
        assert poll_body(server.port, b"v%d" % n, RELOAD_BOUND) is None, (n, server.stdout)
    assert server.stdout.count("Reloading: ") == 5, server.stdout
    assert server.stop() == 0, server.stderr


def test_reload_under_einhorn_keeps_serving_the_inherited_listener(spawn, tmp_path, fake_einhorn):
    write_version(tmp_path, 1)
    (tmp_path / "app.ini").write_text(INI)
    listener, control, port = fake_einhorn.listener, fake_einhorn.control, fake_einhorn.port
    ignored_port = free_port()
    worker = spawn(
        [*server_command(), "--reload", "--bind", f"127.0.0.1:{ignored_port}", "app.ini"],
        fake_einhorn.env(),
        pass_fds=(listener.fileno(),),
    )
    assert read_ack(control) == {"command": "worker:ack", "pid": worker.proc.pid}
    assert get(port)[2] == b"v1"

    for n in (2, 3):
        write_version(tmp_path, n)
        assert poll_body(port, b"v%d" % n, RELOAD_BOUND) is None, worker.stdout + worker.stderr
    worker.wait_for_output(r"(?s)(Listening on 127\.0\.0\.1:%d\b.*){3}" % port, 10)
    assert worker.proc.poll() is None
    assert "is not a socket" not in worker.stderr + worker.stdout
    assert connect_refused(ignored_port, within=0)
    # The re-executed worker (same pid) does not ACK again.
    control.settimeout(1)
    try:
        conn, _ = control.accept()
        conn.close()
        raise AssertionError("a second ACK after the reload")
    except socket.timeout:
        pass
    assert is_non_blocking(listener), "the worker made the shared listener blocking"

    worker.send(signal.SIGUSR2)
    assert worker.wait(30) == 0, worker.stdout + worker.stderr
    assert worker.stderr == "", worker.stderr
    # The master's listener outlives its worker.
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_reload_under_systemd_socket_activation_keeps_the_activated_port(spawn, tmp_path):
    write_version(tmp_path, 1)
    (tmp_path / "app.ini").write_text(INI)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        bind_port = free_port()
        server = launch_socket_activated(spawn, listener, "self", bind_port, args=["--reload"])
        server.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}\b")
        assert get(port)[2] == b"v1"

        for n in (2, 3):
            write_version(tmp_path, n)
            assert poll_body(port, b"v%d" % n, RELOAD_BOUND) is None, server.stdout + server.stderr
        assert server.stdout.count("systemd socket activation: serving on the inherited listener") == 3, server.stdout
        assert connect_refused(bind_port, within=0), "moved to --bind after the reload"
        assert f"Listening on 127.0.0.1:{bind_port}" not in server.stdout
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout + server.stderr
        assert server.stderr == ""


#: An app that says which version it imports, then takes a while to start.
SLOW_START_APP = """
import time

print("importing v{n}", flush=True)


def make_app(app_config):
    time.sleep(2)  # the new process's watcher starts after this

    def app(environ, start_response):
        body = b"v{n}"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""


def test_a_change_saved_while_the_new_process_starts_is_not_lost(run_server, tmp_path):
    (tmp_path / "app.py").write_text(SLOW_START_APP.format(n=1))
    server = run_server(ini=INI, args=["--reload"])
    (tmp_path / "app.py").write_text(SLOW_START_APP.format(n=2))
    server.wait_for_output(r"importing v2", RELOAD_BOUND)
    # v2 is imported; its process does not watch yet.
    (tmp_path / "app.py").write_text(SLOW_START_APP.format(n=3))
    assert poll_body(server.port, b"v3", RELOAD_BOUND + 5) is None, server.stdout
    assert server.stop() == 0, server.stderr


def test_a_connection_that_crossed_the_reexec_is_closed_by_the_new_process(spawn, tmp_path):
    """The core's threads run until execv: a connection accepted between the
    close-on-exec marking and the exec crosses it. The re-executed command
    closes every descriptor it was not meant to keep, first thing. (The race
    itself is microseconds wide; this hands the new process such a
    descriptor, with the variable --reload sets.)"""
    write_version(tmp_path, 1)
    (tmp_path / "app.ini").write_text(INI)
    ours, crossed = socket.socketpair()
    try:
        port = free_port()
        server = spawn(
            [*server_command(), "--bind", f"127.0.0.1:{port}", "app.ini"],
            {"BASEPLATE_SERVE_RELOAD_KEEP_FDS": ""},
            pass_fds=(crossed.fileno(),),
        )
        crossed.close()
        assert closed_within(ours, START_TIMEOUT), "the descriptor that crossed the exec stayed open"
        server.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}\b")
        assert get(port)[2] == b"v1"
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout + server.stderr
    finally:
        ours.close()
