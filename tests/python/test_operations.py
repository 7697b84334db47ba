"""Operations, end to end through the real CLI.

Graceful stop on SIGTERM, SIGINT and SIGUSR2 (stop_timeout, drain_time),
SIGUSR1 stack dumps, --reload, Einhorn worker mode (a fake master written
here), systemd socket activation (a launcher that puts the listener at fd 3),
custom server factories and the WSGI ``handler`` option (gevent's pywsgi).
"""
from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from conftest import START_TIMEOUT, fast_stop, free_port, server_command

#: An app with a fast path (its body names the serving pid) and a slow one
#: that sleeps inside ``sleepy_handler_function`` (found in SIGUSR1 dumps).
APP = """
import logging
import os
import time

from urllib.parse import parse_qs

log = logging.getLogger("testapp")


def sleepy_handler_function(seconds):
    time.sleep(seconds)


def make_app(app_config):
    def app(environ, start_response):
        q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        path = environ["PATH_INFO"]
        if path == "/slow":
            log.info("slow-start %s", q.get("id", ""))
            sleepy_handler_function(float(q.get("s", "2")))
            log.info("slow-end %s", q.get("id", ""))
            body = ("slow done " + q.get("id", "")).encode()
        else:
            body = ("fast %s pid=%d" % (path, os.getpid())).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""

#: A log line of the default setup: "2024-01-31 12:00:00,123 WARNING [42] [trace] name: message".
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) \[(?P<pid>\d+)\] \[(?P<trace>[^\]]*)\] "
    r"(?P<logger>[^\s:]+): (?P<message>.*)$"
)
NATIVE_SUMMARY = (
    r"WARNING \[\d+\] \[[^\]]*\] baseplate_serve\.stacks: Native core: "
    r"open connections=(\d+), accepted=(\d+), queued=(\d+), running=(\d+)"
)


# --------------------------------------------------------------------------- helpers


def get(port: int, path: str = "/", timeout: float = 30) -> Tuple[int, Dict[str, str], bytes]:
    """One GET on a new connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def served_pid(body: bytes) -> int:
    m = re.search(rb"pid=(\d+)", body)
    assert m, body
    return int(m.group(1))


class Request(threading.Thread):
    """One request on its own connection, in the background."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.result: Optional[Tuple[int, bytes]] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=90)
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            self.result = (resp.status, resp.read())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            conn.close()
            self.done.set()


def connect_refused(port: int, within: float = 10.0) -> bool:
    """True once a new TCP connection is refused, polling for ``within`` seconds
    (a stop is asynchronous)."""
    deadline = time.monotonic() + within
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            return True
        s.close()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def poll_body(port: int, expected: bytes, timeout: float) -> Optional[bytes]:
    """GETs / until the body is ``expected`` (None) or ``timeout`` passes
    (returns the last body or error seen)."""
    deadline = time.monotonic() + timeout
    last: Optional[bytes] = None
    while time.monotonic() < deadline:
        try:
            status, _headers, body = get(port, "/", timeout=5)
            if status == 200 and body == expected:
                return None
            last = b"%d %s" % (status, body)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc).encode()
        time.sleep(0.1)
    return last


def is_non_blocking(sock: socket.socket) -> bool:
    """The O_NONBLOCK flag of the open file description (shared with children)."""
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def listening_sockets(port: int) -> int:
    """How many TCP sockets on this machine listen on ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def dump_section(stdout: str) -> str:
    """The log text from the first SIGUSR1 dump header to the native summary."""
    start = stdout.index("Received SIGUSR1, dumping stack traces")
    m = re.search(NATIVE_SUMMARY, stdout[start:])
    return stdout[start : start + m.end()] if m else stdout[start:]


class Process:
    """A subprocess of our own command line (extra ``Popen`` arguments such as
    ``pass_fds``), with its output collected as conftest's ``Server`` does."""

    def __init__(self, argv: Sequence[str], cwd: Path, env: Dict[str, str], **popen) -> None:
        full_env = dict(os.environ)
        full_env.update(env)
        self.proc = subprocess.Popen(
            list(argv), cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
        )
        self._out: List[str] = []
        self._err: List[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for r in self._readers:
            r.start()

    def _pump(self, stream, sink: List[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    def wait_for_output(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.stdout)
            if m:
                return m
            if self.proc.poll() is not None:
                for r in self._readers:
                    r.join(2)
                m = re.search(pattern, self.stdout)
                if m:
                    return m
                raise AssertionError(
                    f"exited {self.proc.returncode} before {pattern!r}:\n{self.stdout}\n{self.stderr}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.stdout}\n{self.stderr}")

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = START_TIMEOUT) -> int:
        code = self.proc.wait(timeout)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        for r in self._readers:
            r.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """``spawn(argv, env={}, **popen)``: a Process in tmp_path, killed at the end."""
    started: List[Process] = []

    def start(argv: Sequence[str], env: Optional[Dict[str, str]] = None, **popen) -> Process:
        process = Process(argv, tmp_path, env or {}, **popen)
        started.append(process)
        return process

    yield start
    for p in started:
        p.kill()


def write_app(tmp_path: Path, app_code: str = APP, server_options: str = "") -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(app_code))
    (tmp_path / "app.ini").write_text(
        fast_stop(
            "[server:main]\nfactory = baseplate.server.wsgi\n"
            + textwrap.dedent(server_options)
            + "\n[app:main]\nfactory = app:make_app\n"
        )
    )


# --------------------------------------------------------------------------- signals

#: Server options selecting how requests reach Python: the default (gevent's
#: hub when gevent is installed, as it is here) and worker threads.
DISPATCH = {"default": "", "threads": "dispatch = threads\n"}


@pytest.mark.parametrize(
    "sig, dispatch",
    [
        (signal.SIGTERM, "default"),
        (signal.SIGINT, "default"),
        (signal.SIGUSR2, "default"),
        (signal.SIGTERM, "threads"),
        (signal.SIGUSR2, "threads"),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_graceful_stop_lets_the_request_in_flight_finish(run_server, sig, dispatch):
    server = run_server(APP, server_options="stop_timeout = 30 seconds\n" + DISPATCH[dispatch])
    slow = Request(server.port, "/slow?id=inflight&s=4")
    slow.start()
    server.wait_for_output(r"slow-start inflight")
    server.send(sig)
    # New connections are refused while the slow request still runs.
    refused = connect_refused(server.port)
    still_running = not slow.done.is_set()
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None, repr(slow.error)
    assert slow.result == (200, b"slow done inflight")
    assert refused, "a connection made after the stop signal was not refused"
    assert still_running, "the request in flight ended before the refusal was checked"
    assert "Traceback" not in server.stdout and server.stderr == ""


@pytest.mark.parametrize("kind", [*DISPATCH, "handler"])
def test_stop_timeout_cuts_a_request_that_never_ends(run_server, kind):
    if kind == "handler":
        server = run_server(HANDLER_APP, server_options="stop_timeout = 2 seconds\nhandler = app:TaggingHandler\n")
    else:
        server = run_server(APP, server_options="stop_timeout = 2 seconds\n" + DISPATCH[kind])
    stuck = Request(server.port, "/slow?id=stuck&s=3600")
    stuck.start()
    server.wait_for_output(r"slow-start stuck")
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(60) == 0, server.stdout + server.stderr
    elapsed = time.monotonic() - started
    # The request is given its stop_timeout, then cut.
    assert 1.5 <= elapsed < 2 + 20, elapsed
    assert stuck.done.wait(10)
    if kind == "handler":
        # gevent's pywsgi answers a request it kills with a 500, as under baseplate.py.
        assert stuck.error is not None or stuck.result[0] == 500, stuck.result
    else:
        assert stuck.result is None and stuck.error is not None, stuck.result
    assert "slow-end stuck" not in server.stdout


def check_drain(server, drain: float) -> None:
    """SIGTERM, then new connections are still answered for the first half of
    ``drain`` seconds; the server exits 0 no sooner than ``drain`` seconds."""
    assert get(server.port, "/before")[0] == 200
    started = time.monotonic()
    server.send(signal.SIGTERM)
    served = 0
    while time.monotonic() - started < drain / 2:
        try:
            status, _headers, body = get(server.port, "/during", timeout=10)
        except (OSError, http.client.HTTPException) as exc:
            after = time.monotonic() - started
            raise AssertionError(
                f"{exc!r} {after:.2f} s after SIGTERM, within drain_time = {drain} s:\n{server.stdout}"
            ) from None
        assert status == 200 and b"fast /during pid=" in body, body
        served += 1
        time.sleep(0.1)
    assert served >= 3
    assert server.wait(30) == 0, server.stdout + server.stderr
    elapsed = time.monotonic() - started
    assert drain - 0.1 <= elapsed < drain + 20, elapsed
    assert connect_refused(server.port, within=0)
    assert "Traceback" not in server.stdout


@pytest.mark.parametrize("value, dispatch", [("3", "default"), ("3 seconds", "threads")])
def test_drain_time_keeps_serving_after_sigterm(run_server, value, dispatch):
    options = f"drain_time = {value}\nstop_timeout = 10 seconds\n" + DISPATCH[dispatch]
    server = run_server(APP, server_options=options)
    check_drain(server, 3)
    assert server.stderr == ""


def test_drain_time_defaults_to_zero(run_server):
    server = run_server(APP)
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0
    assert time.monotonic() - started < 20
    assert "Draining" not in server.stdout


@pytest.mark.parametrize("dispatch", list(DISPATCH))
def test_sigusr1_dumps_every_stack_and_keeps_serving(run_server, dispatch):
    server = run_server(APP, server_options="stop_timeout = 30 seconds\n" + DISPATCH[dispatch])
    slow = Request(server.port, "/slow?id=dump&s=5")
    slow.start()
    server.wait_for_output(r"slow-start dump")
    server.send(signal.SIGUSR1)
    m = server.wait_for_output(NATIVE_SUMMARY)
    open_connections, accepted, _queued, running = map(int, m.groups())
    assert open_connections >= 1 and accepted >= 1, m.group(0)
    dump = dump_section(server.stdout)
    assert "sleepy_handler_function" in dump, dump
    # Every record of the dump is a WARNING of baseplate_serve.stacks.
    records = [LOG_LINE.match(line) for line in dump.splitlines()]
    records = [r for r in records if r]
    assert records and all((r["level"], r["logger"]) == ("WARNING", "baseplate_serve.stacks") for r in records)
    # Serving goes on: a new request, and the one that was sleeping.
    status, _headers, body = get(server.port, "/after-dump")
    assert status == 200 and body.startswith(b"fast /after-dump"), body
    assert slow.done.wait(30)
    assert slow.error is None and slow.result == (200, b"slow done dump"), (slow.result, slow.error)
    assert server.proc.poll() is None
    assert server.stop() == 0
    # The summary counts the request that was in the app when the dump was taken.
    assert running >= 1, m.group(0)


# --------------------------------------------------------------------------- --reload

RELOAD_APP = """
import os

def make_app(app_config):
    def app(environ, start_response):
        body = ({text!r} + " " + app_config.get("greeting", "")).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""

BROKEN_APP = """
def make_app(app_config):
    def app(environ, start_response)
        return []
    return app
"""

RELOAD_INI = "[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = app:make_app\ngreeting = {}\n"

#: Bound for a change to be served (asked for: 3 s; generous for a loaded machine).
RELOAD_BOUND = 10.0


def test_reload_serves_changed_code_and_survives_a_syntax_error(run_server, tmp_path):
    server = run_server(RELOAD_APP.format(text="one"), ini=RELOAD_INI.format("hello"), args=["--reload"])
    assert get(server.port)[2] == b"one hello"
    assert listening_sockets(server.port) == 1

    # The config file is watched.
    (tmp_path / "app.ini").write_text(fast_stop(RELOAD_INI.format("bonjour")))
    assert poll_body(server.port, b"one bonjour", RELOAD_BOUND) is None, server.stdout

    # The app's module is watched.
    (tmp_path / "app.py").write_text(textwrap.dedent(RELOAD_APP.format(text="second version")))
    assert poll_body(server.port, b"second version bonjour", RELOAD_BOUND) is None, server.stdout

    # A syntax error: reported at ERROR, the running code keeps serving.
    (tmp_path / "app.py").write_text(textwrap.dedent(BROKEN_APP))
    m = server.wait_for_output(r"ERROR \[\d+\] \[[^\]]*\] baseplate_serve\.reload: Not reloading: (\S*app\.py):(\d+): ", 20)
    assert Path(m.group(1)).name == "app.py" and int(m.group(2)) == 3, m.group(0)
    assert get(server.port)[2] == b"second version bonjour"

    # Fixing it brings the new code.
    (tmp_path / "app.py").write_text(textwrap.dedent(RELOAD_APP.format(text="the third version")))
    assert poll_body(server.port, b"the third version bonjour", RELOAD_BOUND) is None, server.stdout

    # Re-executed in place (same pid), and the old listening socket was not
    # carried into the new process.
    # (The last "Listening on" may reach the pipe after the first response.)
    server.wait_for_output(r"(?s)(Listening on .*){4}", 10)
    assert all(int(r["pid"]) == server.proc.pid for r in map(LOG_LINE.match, server.stdout.splitlines()) if r)
    assert listening_sockets(server.port) == 1
    assert server.stop() == 0


# --------------------------------------------------------------------------- Einhorn


def read_ack(control: socket.socket) -> dict:
    """Accepts one connection on the master's control socket and reads it to its end."""
    conn, _ = control.accept()
    with conn:
        conn.settimeout(START_TIMEOUT)
        data = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data
    return json.loads(data)


def einhorn_env(listener: socket.socket, sock_path: Path, **extra: str) -> Dict[str, str]:
    env = {
        "EINHORN_MASTER_PID": str(os.getpid()),  # the workers are our children
        "EINHORN_FD_COUNT": "1",
        "EINHORN_FD_0": str(listener.fileno()),
        "EINHORN_SOCK_PATH": str(sock_path),
    }
    env.update(extra)
    return env


class FakeEinhorn:
    """What an Einhorn master gives its workers: a shared TCP listener (non-
    blocking, as Einhorn hands it over) and the control socket they ACK on."""

    def __init__(self, tmp_path: Path) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sock_path = tmp_path / "einhorn.sock"
        self.control.bind(str(self.sock_path))
        self.control.listen(8)
        self.control.settimeout(START_TIMEOUT)

    def env(self, **extra: str) -> Dict[str, str]:
        return einhorn_env(self.listener, self.sock_path, **extra)

    def close(self) -> None:
        self.listener.close()
        self.control.close()


@pytest.fixture
def fake_einhorn(tmp_path: Path) -> Iterator[FakeEinhorn]:
    master = FakeEinhorn(tmp_path)
    yield master
    master.close()


def test_einhorn_workers_share_the_inherited_listener(spawn, tmp_path, fake_einhorn):
    write_app(tmp_path)
    listener, control, port = fake_einhorn.listener, fake_einhorn.control, fake_einhorn.port
    ignored_port = free_port()
    argv = [*server_command(), "--bind", f"127.0.0.1:{ignored_port}", "app.ini"]
    workers = [
        spawn(argv, fake_einhorn.env(), pass_fds=(listener.fileno(),)) for _ in range(2)
    ]
    pids = {w.proc.pid for w in workers}

    acks = [read_ack(control) for _ in range(2)]
    assert {a["pid"] for a in acks} == pids, acks
    assert all(a == {"command": "worker:ack", "pid": a["pid"]} for a in acks), acks
    for w in workers:
        w.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}\b")
        assert f":{ignored_port}" not in w.stdout

    # Requests through the shared listener; --bind was not used.
    for i in range(10):
        status, _headers, body = get(port, f"/both{i}")
        assert status == 200 and served_pid(body) in pids, body
    assert connect_refused(ignored_port, within=0)
    assert is_non_blocking(listener), "a worker made the shared listener blocking"

    # SIGUSR2 stops one worker; the other still accepts on the listener.
    first, second = workers
    first.send(signal.SIGUSR2)
    assert first.wait(30) == 0, first.stdout + first.stderr
    for i in range(20):
        status, _headers, body = get(port, f"/second{i}", timeout=15)
        assert status == 200 and served_pid(body) == second.proc.pid, body
    assert is_non_blocking(listener), "a worker made the shared listener blocking"
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1

    second.send(signal.SIGUSR2)
    assert second.wait(30) == 0, second.stdout + second.stderr
    for w in workers:
        assert w.stderr == "", w.stderr
        assert "Traceback" not in w.stdout
    # The master's listener outlives its workers.
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


def test_einhorn_unix_listener_with_its_family(spawn, tmp_path):
    write_app(tmp_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listen_path = tmp_path / "svc.sock"
        listener.bind(str(listen_path))
        listener.listen(16)
        listener.setblocking(False)
        sock_path = tmp_path / "einhorn.sock"
        control.bind(str(sock_path))
        control.listen(8)
        control.settimeout(START_TIMEOUT)
        worker = spawn(
            [*server_command(), "--bind", f"127.0.0.1:{free_port()}", "app.ini"],
            einhorn_env(listener, sock_path, EINHORN_FD_FAMILY_0="AF_UNIX"),
            pass_fds=(listener.fileno(),),
        )
        assert read_ack(control) == {"command": "worker:ack", "pid": worker.proc.pid}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(30)
            client.connect(str(listen_path))
            client.sendall(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert data.endswith(b"fast /unix pid=%d" % worker.proc.pid), data
        worker.send(signal.SIGUSR2)
        assert worker.wait(30) == 0, worker.stdout + worker.stderr
    finally:
        listener.close()
        control.close()


def test_einhorn_with_several_sockets_serves_the_first_and_says_so(spawn, tmp_path):
    write_app(tmp_path)
    first, second = socket.socket(), socket.socket()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for s in (first, second):
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            s.setblocking(False)
        sock_path = tmp_path / "einhorn.sock"
        control.bind(str(sock_path))
        control.listen(8)
        control.settimeout(START_TIMEOUT)
        env = einhorn_env(first, sock_path, EINHORN_FD_COUNT="2", EINHORN_FD_1=str(second.fileno()))
        worker = spawn(
            [*server_command(), "--bind", f"127.0.0.1:{free_port()}", "app.ini"],
            env,
            pass_fds=(first.fileno(), second.fileno()),
        )
        assert read_ack(control)["pid"] == worker.proc.pid
        worker.wait_for_output(r"WARNING .*Einhorn passed 2 sockets \(EINHORN_FD_COUNT=2\): serving only the first")
        assert get(first.getsockname()[1], "/first")[0] == 200
        worker.send(signal.SIGUSR2)
        assert worker.wait(30) == 0, worker.stdout + worker.stderr
    finally:
        first.close()
        second.close()
        control.close()


def test_einhorn_environment_of_another_master_is_ignored(run_server, tmp_path):
    env = {
        "EINHORN_MASTER_PID": str(os.getppid()),  # not the server's parent
        "EINHORN_FD_COUNT": "1",
        "EINHORN_FD_0": "0",
        "EINHORN_SOCK_PATH": str(tmp_path / "nobody.sock"),
    }
    server = run_server(APP, env=env)
    assert get(server.port, "/own")[0] == 200
    assert f"Listening on 127.0.0.1:{server.port}" in server.stdout
    assert "Einhorn" not in server.stdout
    assert server.stop(signal.SIGUSR2) == 0


# --------------------------------------------------------------------------- systemd

#: Puts the listeners at fds 3, 4, ... and sets LISTEN_FDS/LISTEN_PID as
#: systemd does, then execs the CLI (exec keeps the pid).
LAUNCHER = """
import fcntl
import os
import sys

fds, whose = [int(fd) for fd in sys.argv[1].split(",")], sys.argv[2]
# Out of the way first: a listener may already sit where another one goes.
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ["LISTEN_FDS"] = str(len(fds))
os.environ["LISTEN_PID"] = str(os.getpid() if whose == "self" else os.getppid())
os.execvp(sys.argv[3], sys.argv[3:])
"""


def launch_socket_activated(
    spawn, listener, whose: str, bind_port: int, args: Sequence[str] = ()
) -> Process:
    """The CLI started as systemd starts it, with ``listener`` (a socket, or
    a list of them) at fd 3 (and up)."""
    listeners = listener if isinstance(listener, list) else [listener]
    fds = [s.fileno() for s in listeners]
    argv = [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), whose, *server_command()]
    return spawn([*argv, *args, "--bind", f"127.0.0.1:{bind_port}", "app.ini"], pass_fds=fds)


def test_systemd_socket_activation_serves_on_fd_3(spawn, tmp_path):
    write_app(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        ignored_port = free_port()
        server = launch_socket_activated(spawn, listener, "self", ignored_port)
        server.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}\b")
        status, _headers, body = get(port, "/activated")
        assert status == 200 and served_pid(body) == server.proc.pid, body
        assert connect_refused(ignored_port, within=0)
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout + server.stderr
        assert server.stderr == ""


@pytest.mark.parametrize("dispatch", sorted(DISPATCH))
def test_requests_queued_before_start_up_do_not_stall_it(spawn, tmp_path, dispatch):
    """Requests waiting on the listener when the server starts are served,
    and start-up still completes: "Listening", then a graceful stop."""
    write_app(tmp_path, server_options=DISPATCH[dispatch])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        early = []
        for i in range(20):  # queued in the kernel before the server exists
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(f"GET /early{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            early.append(c)
        server = launch_socket_activated(spawn, listener, "self", free_port())
        try:
            for c in early:
                c.settimeout(30)
                data = b""
                while chunk := c.recv(65536):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data
        finally:
            for c in early:
                c.close()
        server.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}\b")
        assert get(port, "/after")[0] == 200
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout + server.stderr


def test_systemd_variables_for_another_pid_are_ignored(spawn, tmp_path):
    write_app(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        bind_port = free_port()
        server = launch_socket_activated(spawn, listener, "parent", bind_port)
        server.wait_for_output(rf"Listening on 127\.0\.0\.1:{bind_port}\b")
        status, _headers, body = get(bind_port, "/bound")
        assert status == 200 and body.startswith(b"fast /bound"), body
        assert "systemd socket activation" not in server.stdout  # the start-up line names the tmp path
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0, server.stdout + server.stderr


def test_several_systemd_sockets_are_refused_at_start(spawn, tmp_path):
    """Two ListenStream= in a .socket unit: one clear error, exit 2, instead
    of serving the first and holding the second open, unserved."""
    write_app(tmp_path)
    with socket.socket() as first, socket.socket() as second:
        for s in (first, second):
            s.bind(("127.0.0.1", 0))
            s.listen(16)
        bind_port = free_port()
        server = launch_socket_activated(spawn, [first, second], "self", bind_port)
        assert server.wait(30) == 2, server.stdout + server.stderr
        assert server.stderr.splitlines() == [
            "baseplate-serve: error: systemd passed 2 sockets (LISTEN_FDS=2); baseplate-serve serves one:"
            " give the .socket unit one ListenStream=, or run one service per socket"
        ], server.stderr
        assert "Listening on" not in server.stdout
        assert connect_refused(bind_port, within=0)


# --------------------------------------------------------------------------- custom server factories

CUSTOM_COMMON = r'''
import logging
import socket
import threading

log = logging.getLogger("customserver")


def call_app(app, path):
    def start_response(status, headers, exc_info=None):
        return lambda data: None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": ""}
    return b"".join(app(environ, start_response))


def custom_accept_loop(server):
    while not server.stopping.is_set():
        try:
            conn, _ = server.listener.accept()
        except socket.timeout:
            continue
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            path = data.split(b" ")[1].decode() if data.count(b" ") >= 2 else "/"
            body = b"custom " + server.config["greeting"].encode() + b": " + call_app(server.app, path)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class BaseServer:
    def __init__(self, config, listener, app):
        log.info(
            "factory got config=%s listener=%s app-callable=%s",
            type(config).__name__, isinstance(listener, socket.socket), callable(app),
        )
        self.config, self.listener, self.app = config, listener, app
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
'''

CUSTOM_START_STOP = CUSTOM_COMMON + r'''

class StartStopServer(BaseServer):
    def start(self):
        log.info("custom start called")
        self.thread = threading.Thread(target=custom_accept_loop, args=(self,), name="custom-accept")
        self.thread.start()

    def stop(self):
        log.info("custom stop called")
        self.stopping.set()
        self.thread.join(10)


def make_custom_server(server_config, listener, app):
    return StartStopServer(server_config, listener, app)
'''

CUSTOM_SERVE_FOREVER = CUSTOM_COMMON + r'''

class ServeForeverServer(BaseServer):
    def serve_forever(self):
        log.info("custom serve_forever called")
        custom_accept_loop(self)

    def stop(self):
        log.info("custom stop called")
        self.stopping.set()


def make_server(server_config, listener, app):
    return ServeForeverServer(server_config, listener, app)
'''

CUSTOM_INI = "[server:main]\nfactory = {}\ngreeting = {}\n{}\n[app:main]\nfactory = app:make_app\n"

FACTORY_LOG = "factory got config=dict listener=True app-callable=True"


def test_custom_server_factory_with_start_and_stop(run_server, tmp_path):
    (tmp_path / "custom_start_stop.py").write_text(CUSTOM_START_STOP)
    server = run_server(APP, ini=CUSTOM_INI.format("custom_start_stop:make_custom_server", "hi", ""))
    server.wait_for_output(r"custom start called")
    status, _headers, body = get(server.port, "/via-custom")
    assert status == 200 and body.startswith(b"custom hi: fast /via-custom pid="), body
    assert FACTORY_LOG in server.stdout

    # SIGUSR1 dumps the custom server's threads too, and serving goes on.
    server.send(signal.SIGUSR1)
    server.wait_for_output(r"Received SIGUSR1, dumping stack traces")
    server.wait_for_output(r"custom_accept_loop")
    assert get(server.port, "/after-dump")[0] == 200

    assert server.stop(signal.SIGTERM) == 0, server.stdout + server.stderr
    assert "custom stop called" in server.stdout
    assert server.stderr == ""


def test_custom_server_factory_with_serve_forever_and_default_name(run_server, tmp_path):
    (tmp_path / "custom_forever.py").write_text(CUSTOM_SERVE_FOREVER)
    server = run_server(APP, ini=CUSTOM_INI.format("custom_forever", "hey", ""))
    server.wait_for_output(r"custom serve_forever called")
    status, _headers, body = get(server.port, "/forever")
    assert status == 200 and body.startswith(b"custom hey: fast /forever pid="), body
    assert FACTORY_LOG in server.stdout
    assert server.stop(signal.SIGTERM) == 0, server.stdout + server.stderr
    assert "custom stop called" in server.stdout
    assert server.stderr == ""


# --------------------------------------------------------------------------- WSGI handler option

HANDLER_APP = (
    APP
    + """

import gevent.pywsgi


class TaggingHandler(gevent.pywsgi.WSGIHandler):
    def handle(self):
        log.info("TaggingHandler.handle called")
        return super().handle()

    def start_response(self, status, headers, exc_info=None):
        return super().start_response(status, list(headers) + [("X-Handled-By", "TaggingHandler")], exc_info)
"""
)


def test_wsgi_handler_option_serves_with_pywsgi_and_that_handler(run_server):
    server = run_server(HANDLER_APP, server_options="handler = app:TaggingHandler\nstop_timeout = 30 seconds\n")
    warning = [
        r
        for r in map(LOG_LINE.match, server.stdout.splitlines())
        if r and r["level"] == "WARNING" and "app:TaggingHandler" in r["message"] and "pywsgi" in r["message"]
    ]
    assert warning, server.stdout

    status, headers, body = get(server.port, "/tagged")
    assert status == 200 and body.startswith(b"fast /tagged pid="), body
    assert headers.get("x-handled-by") == "TaggingHandler", headers
    server.wait_for_output(r"TaggingHandler\.handle called")

    # gevent is in use: SIGUSR1 shows the greenlet sleeping in the app.
    slow = Request(server.port, "/slow?id=green&s=5")
    slow.start()
    server.wait_for_output(r"slow-start green")
    server.send(signal.SIGUSR1)
    server.wait_for_output(r"Received SIGUSR1, dumping stack traces")
    server.wait_for_output(r"sleepy_handler_function")
    status, headers, _body = get(server.port, "/during-slow")
    assert status == 200 and headers.get("x-handled-by") == "TaggingHandler"

    # Graceful stop: new connections are refused, the request in flight finishes.
    server.send(signal.SIGTERM)
    refused = connect_refused(server.port)
    still_running = not slow.done.is_set()
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None and slow.result == (200, b"slow done green"), (slow.result, slow.error)
    assert refused, "a connection made after the stop signal was not refused"
    assert still_running, "the request in flight ended before the refusal was checked"


# --------------------------------------------------------------------------- drain_time for every kind of server


@pytest.mark.parametrize("kind", ["custom-start-stop", "custom-serve-forever", "handler"])
def test_drain_time_applies_to_every_kind_of_server(run_server, tmp_path, kind):
    # drain_time is read for any [server:NAME], as baseplate.py does.
    if kind == "custom-start-stop":
        (tmp_path / "custom_start_stop.py").write_text(CUSTOM_START_STOP)
        server = run_server(APP, ini=CUSTOM_INI.format("custom_start_stop:make_custom_server", "hi", "drain_time = 3"))
    elif kind == "custom-serve-forever":
        (tmp_path / "custom_forever.py").write_text(CUSTOM_SERVE_FOREVER)
        server = run_server(APP, ini=CUSTOM_INI.format("custom_forever", "hey", "drain_time = 3 seconds"))
    else:
        server = run_server(HANDLER_APP, server_options="handler = app:TaggingHandler\ndrain_time = 3\n")
    check_drain(server, 3)
