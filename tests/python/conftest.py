"""Fixtures that run the real ``baseplate-serve`` in a subprocess."""
from __future__ import annotations

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
from typing import Callable, Iterator, List, Optional, Sequence

import pytest

try:  # the installed .pth does this; a source tree on PYTHONPATH (make dev) does not
    import _baseplate_serve_shim

    _baseplate_serve_shim.install()
except ImportError:
    pass

# Servers log JSON when stdin is not a TTY (as baseplate.py 2.7 does), which
# is how tests run: the tests that read log lines expect the text format
# unless they ask for JSON (test_logging_json.py).
os.environ.setdefault("BASEPLATE_SERVE_LOG_FORMAT", "text")

#: Generous bound for a server to come up on a loaded 2-core machine.
START_TIMEOUT = 30.0

# `make test-asan` (docs/security.md, "Sanitizers"): every process writes its
# ASan/UBSan reports into this directory, and every server must have loaded
# this sanitized _core.
SANITIZER_LOGS = os.environ.get("BPS_SANITIZER_LOGS")
SANITIZED_CORE = os.environ.get("BPS_SANITIZED_CORE")


def sanitizer_reports(pid: Optional[int] = None) -> List[Path]:
    """The report files in SANITIZER_LOGS (of one process, with ``pid``)."""
    if not SANITIZER_LOGS or not os.path.isdir(SANITIZER_LOGS):
        return []
    return sorted(
        p for p in Path(SANITIZER_LOGS).iterdir() if pid is None or p.name.endswith(f".{pid}")
    )


REPO = Path(__file__).resolve().parents[2]


def stale_install_report(tree: Path, package_dir: Path) -> List[str]:
    """What the copy of baseplate_serve at ``package_dir`` (the one the
    servers under test import) lacks of the source ``tree``: Python files
    that differ from the tree's, and a _core older than the C++ sources.
    Empty when it is up to date (or is the tree itself, built in place)."""
    problems: List[str] = []
    if package_dir.resolve() != (tree / "python" / "baseplate_serve").resolve():
        for name in ("baseplate_serve", "baseplate"):
            for source in sorted((tree / "python" / name).rglob("*.py")):
                rel = source.relative_to(tree / "python")
                copy = package_dir.parent / rel
                if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                    problems.append(f"{rel} differs from the tree's")
    cores = sorted(package_dir.glob("_core*.so"))
    if not cores:
        problems.append(f"no _core*.so in {package_dir}")
    else:
        core_time = max(c.stat().st_mtime for c in cores)
        sources = [tree / "CMakeLists.txt", *(tree / "cmake").rglob("*"), *(tree / "cpp").rglob("*")]
        newer = [p for p in sources if p.is_file() and p.stat().st_mtime > core_time]
        if newer:
            problems.append(
                f"{cores[0].name} is older than {len(newer)} C++ source(s), e.g. {newer[0].relative_to(tree)}"
            )
    return problems


def pytest_sessionstart(session):
    """The servers under test run the INSTALLED package (or PYTHONPATH's):
    refuse to test a copy older than the tree, which would test stale code
    and pass or fail for the wrong reasons. BPS_ALLOW_STALE=1 only warns."""
    import baseplate_serve

    package_dir = Path(baseplate_serve.__file__).resolve().parent
    problems = stale_install_report(REPO, package_dir)
    if not problems:
        return
    message = (
        f"\n{'!' * 78}\nThe tests would run baseplate_serve from {package_dir},\n"
        f"which is older than the source tree {REPO}:\n  - "
        + "\n  - ".join(problems[:10])
        + ("\n  - ..." if len(problems) > 10 else "")
        + "\nRun `make install` (or `make dev` and PYTHONPATH=python) first;"
        " BPS_ALLOW_STALE=1 runs anyway.\n" + "!" * 78 + "\n"
    )
    if os.environ.get("BPS_ALLOW_STALE") == "1":
        sys.stderr.write(message)
        return
    pytest.exit(message, returncode=4)


def pytest_sessionfinish(session, exitstatus):
    reports = sanitizer_reports()
    if reports:
        text = "\n".join(f"== {p}\n{p.read_text(errors='replace')}" for p in reports)
        sys.stderr.write(f"\n{len(reports)} sanitizer report(s) under {SANITIZER_LOGS}:\n{text}\n")
        session.exitstatus = 1


def server_command() -> List[str]:
    """The installed console script, else ``python -m baseplate_serve``."""
    script = Path(sys.executable).parent / "baseplate-serve"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "baseplate_serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: BPS_TEST_IO_THREADS=N runs every server the tests start with that
#: ``io_threads`` (unless the test's INI sets its own): the whole suite runs
#: with the core's I/O thread that way (``make test-io-threads``, N = 1),
#: where the default is inline I/O under gevent.
IO_THREADS_OVERRIDE = os.environ.get("BPS_TEST_IO_THREADS", "")


def apply_server_overrides(ini: str, io_threads: str = IO_THREADS_OVERRIDE) -> str:
    """Adds ``io_threads = <io_threads>`` to each ``[server:...]`` section
    of `ini` that does not set it."""
    if not io_threads:
        return ini
    out: List[str] = []
    in_server = False
    has_key = False

    def close_section() -> None:
        if in_server and not has_key:
            # Before the section's trailing blank lines, not after them.
            tail = []
            while out and not out[-1].strip():
                tail.append(out.pop())
            out.append(f"io_threads = {io_threads}")
            out.extend(tail)

    for line in ini.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            close_section()
            in_server = stripped.startswith("[server:")
            has_key = False
        elif in_server and re.match(r"io_threads\s*[=:]", stripped):
            has_key = True
        out.append(line)
    close_section()
    return "\n".join(out) + "\n"


class Server:
    """A running ``baseplate-serve`` and everything it printed."""

    def __init__(
        self,
        args: Sequence[str],
        cwd: Path,
        env: Optional[dict] = None,
        port: int = 0,
        command: Optional[Sequence[str]] = None,
        io_threads_override: bool = True,
    ) -> None:
        self.port = port
        self.cwd = cwd
        for arg in args if io_threads_override else ():
            ini_path = Path(cwd) / arg
            # Never a file of the tree (the examples): a test run must not
            # change what is committed. Those servers keep their own setting.
            in_tree = REPO in ini_path.resolve().parents
            if IO_THREADS_OVERRIDE and arg.endswith(".ini") and ini_path.is_file() and not in_tree:
                ini_path.write_text(apply_server_overrides(ini_path.read_text()))
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*(command or server_command()), *args],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,  # not a TTY: JSON logs unless BASEPLATE_SERVE_LOG_FORMAT says
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
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
                    f"server exited {self.proc.returncode} before {pattern!r}:\n{self.stdout}\n{self.stderr}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.stdout}\n{self.stderr}")

    def wait_listening(self) -> "Server":
        self.wait_for_output(r"Listening on ")
        if SANITIZED_CORE:
            self.check_sanitized_core()
        return self

    def check_sanitized_core(self) -> None:
        """Under `make test-asan`: the server runs with the ASan runtime, and
        the _core it loaded (none for a custom factory or a pywsgi handler)
        is the sanitized one."""
        try:
            maps = Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:
            return  # already gone
        assert "libasan" in maps, f"server {self.proc.pid} runs without the ASan runtime"
        cores = {line.split()[-1] for line in maps.splitlines() if "/baseplate_serve/_core" in line}
        assert cores <= {SANITIZED_CORE}, f"server {self.proc.pid} loaded {cores}, not {SANITIZED_CORE}"

    def assert_no_sanitizer_report(self) -> None:
        if SANITIZER_LOGS:
            # gcc's libubsan writes to stderr even with log_path set
            m = re.search(r"^.*(runtime error: |==\d+==ERROR: \w+Sanitizer).*$", self.stderr, re.M)
            assert not m, f"sanitizer report from the server:\n{self.stderr[-20000:]}"
        reports = sanitizer_reports(self.proc.pid)
        assert not reports, "sanitizer report(s) from the server:\n" + "\n".join(
            p.read_text(errors="replace") for p in reports
        )

    def send(self, sig: int = signal.SIGTERM) -> None:
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = START_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.send(sig)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


#: The stop options fast_stop() adds: the defaults (baseplate.py's drain of
#: 5 s and stop_timeout of 10 s) would add seconds to every test that stops
#: a server; tests of the stop set their own or ask for the defaults.
FAST_STOP = {"drain_time": "0", "stop_timeout": "0"}
BUILTIN_FACTORIES = ("baseplate.server.wsgi", "baseplate.server.thrift")


def fast_stop(ini: str) -> str:
    """``ini`` with ``drain_time = 0`` (and, for the built-in factories,
    ``stop_timeout = 0``) in each ``[server:...]`` section that does not set
    them itself. A custom factory's stop_timeout is its own business."""
    lines = ini.splitlines(keepends=True)
    out: List[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not re.match(r"\s*\[server:[^]]*\]\s*$", line):
            continue
        end = i
        while end < len(lines) and not re.match(r"\s*\[", lines[end]):
            end += 1
        body = "".join(lines[i:end])
        factory = re.search(r"^factory\s*[=:]\s*(\S+)", body, re.M)
        builtin = factory is not None and factory.group(1) in BUILTIN_FACTORIES
        for key, value in FAST_STOP.items():
            if (key == "drain_time" or builtin) and not re.search(rf"^{key}\s*[=:]", body, re.M):
                out.append(f"{key} = {value}\n")
    return "".join(out)


@pytest.fixture
def run_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``run_server(app_code, server_options="", app_options="", args=(), wait=True)``.

    Writes ``app.py`` (the code) and ``app.ini`` into a temp dir and starts
    ``baseplate-serve --bind 127.0.0.1:PORT app.ini`` there. The app module
    must define ``make_app(app_config)``. The server section gets
    ``fast_stop()`` unless ``stop_defaults=True``.
    """
    started: List[Server] = []

    def start(
        app_code: str = "",
        server_options: str = "",
        app_options: str = "",
        args: Sequence[str] = (),
        wait: bool = True,
        ini: Optional[str] = None,
        env: Optional[dict] = None,
        stop_defaults: bool = False,
        io_threads_override: bool = True,
    ) -> Server:
        if app_code:
            (tmp_path / "app.py").write_text(textwrap.dedent(app_code))
        if ini is None:
            ini = (
                "[server:main]\nfactory = baseplate.server.wsgi\n"
                + textwrap.dedent(server_options)
                + "\n[app:main]\nfactory = app:make_app\n"
                + textwrap.dedent(app_options)
            )
        if not stop_defaults:
            ini = fast_stop(ini)
        (tmp_path / "app.ini").write_text(ini)
        port = free_port()
        server = Server(
            [*args, "--bind", f"127.0.0.1:{port}", "app.ini"], tmp_path, env, port,
            io_threads_override=io_threads_override,
        )
        started.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    for s in started:
        s.kill()
    for s in started:
        s.assert_no_sanitizer_report()
