#!/usr/bin/env python3
"""Benchmark harness: runs every scenario of bench/README.md and writes
bench/RESULTS.md (and, with the bench venv's matplotlib, bench/results.png).

Standard library only, except the chart (drawn by re-running this file with
bench/.venv/bin/python --plot). bench/run.sh prepares the venvs, the native
load generators and reference servers, and calls this; it can also be run
directly:

    python3 bench/harness.py [--scenario NAME ...] [--repeats N] [--duration 10s] [--results PATH]

One measurement ("run"): start the server pinned to core 0, wait until it
answers (an HTTP GET, or a Thrift echo call), load it from core 1 (wrk,
http_load or thrift_load) for a fixed duration, read the CPU time of the
server's whole process tree before and after the load and its RSS after,
then stop it with SIGTERM. Every case of a scenario runs once per round and
rounds are interleaved (A B C A B C ...), because this VM drifts between
fast and slow states over minutes; tables report the median of the rounds.
The machine is shared, so each run waits for it to be idle first, and is
redone if other work took CPU during it. A server that fails is recorded as
failed and the bench goes on. The profile scenario is not timed: it runs
bench/profile.py (callgrind) once, for instructions per request.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import traceback

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # raw per-run output (git-ignored)
OURS = ROOT / ".venv" / "bin" / "baseplate-serve"
PEER_BIN = BENCH / ".venv" / "bin"
PEER_PYTHON = PEER_BIN / "python"
NATIVE = Path(os.environ.get("BENCH_NATIVE_DIR", BENCH / "native" / "build"))  # bench/native executables
CONFIGS = BENCH / "configs"
APPS = BENCH / "apps"
PEERS = BENCH / "peers"
HELLO = ROOT / "examples" / "hello"
THRIFT_ECHO = ROOT / "examples" / "thrift_echo"
NATIVE_HTTP = ROOT / "examples" / "native_http"
NATIVE_THRIFT = ROOT / "examples" / "native_thrift"

SERVER_CPU = "0"  # the server gets core 0 ...
CLIENT_CPU = "1"  # ... and the load generator core 1, so they never compete for a core
CONNECTIONS = 50
START_TIMEOUT = 30.0
QUIET_LOAD = 0.15  # cores busy with anything else: above this, wait before a run
NOISY_LOAD = 0.25  # other load during a run above which the run is redone ...
ATTEMPTS = int(os.environ.get("BENCH_ATTEMPTS", "3"))  # ... this many times at most (then the last is kept)
SATURATED = 0.85  # load generator busier than this (cores): it, not the server, may be the limit
STOP_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


QUIET_WAIT = env_float("BENCH_QUIET_WAIT", 300)  # seconds, per run
SOAK_SECONDS = env_float("BENCH_SOAK", 600)
SOAK_INTERVAL = env_float("BENCH_SOAK_INTERVAL", 10)
IDLE_COUNT = int(env_float("BENCH_IDLE_COUNT", 10000))
IDLE_HOLD = env_float("BENCH_IDLE_HOLD", 10)
STARTUP_RUNS = int(env_float("BENCH_STARTUP_RUNS", 10))
PROFILE_SECONDS = max(2, int(env_float("BENCH_PROFILE_SECONDS", 2)))  # the long wrk run of bench/profile.py (the short: 1 s)
PROFILE_TIMEOUT = 600.0
GTHREAD_THREADS = os.environ.get("BENCH_GTHREAD_THREADS", "4")
UWSGI_THREADS = os.environ.get("BENCH_UWSGI_THREADS", str(CONNECTIONS))
# granian's thread settings: granian-threads runs each, and http-hello uses
# the best of them (or BENCH_GRANIAN_THREADS when granian-threads did not run).
GRANIAN_VARIANTS = {
    "default": [],
    "bt1": ["--blocking-threads", "1"],
    "bt4": ["--blocking-threads", "4"],
    "rt2": ["--runtime-threads", "2"],
}
GRANIAN_THREADS = os.environ.get("BENCH_GRANIAN_THREADS", "").split()


# --- servers --------------------------------------------------------------------------------


@dataclass
class Server:
    key: str  # short, stable id (file names, runs.json)
    name: str  # as shown in the tables
    command: Callable[[int], List[str]]  # port -> argv
    cwd: Path
    ours: bool = False
    protocol: str = "http"  # ready check: "http" (GET path answers 200) or "thrift" (an echo call)
    needs: Tuple[Path, ...] = ()  # files without which the server is skipped (not built)
    env: Dict[str, str] = field(default_factory=dict)
    upstream: bool = False  # calls bench/native's raw_asio_server at BENCH_UPSTREAM (started per run)
    # ours, Python app under gevent dispatch: the io_threads its label names,
    # checked against the server's log after each run (a row whose server ran
    # otherwise says so: the default of io_threads may change under the bench)
    io_threads: Optional[int] = None


def _bind(port: int) -> str:
    return f"127.0.0.1:{port}"


def ours(key: str, name: str, cwd: Path, ini: str, protocol: str = "http", needs: Tuple[Path, ...] = (),
         io_threads: Optional[int] = None) -> Server:
    return Server(key, name, lambda p: [str(OURS), "--bind", _bind(p), ini], cwd, True, protocol, needs,
                  io_threads=io_threads)


# Labels of our gevent rows. "default" is the default of io_threads for a
# Python app under gevent dispatch (inline I/O); the rows that are about a
# mode set io_threads explicitly in their INI, so they mean the same whatever
# the default is. examples/hello's hello.ini sets none: its row is the default.
GEVENT_DEFAULT = "ours, gevent (default: io_threads = 0)"
GEVENT_IO1 = "ours, gevent, io_threads = 1"


def pywsgi(key: str, name: str, cwd: Path, ini: str, *args: str) -> Server:
    return Server(
        key, name, lambda p: [str(PEER_PYTHON), str(PEERS / "baseplate_wsgi.py"), "--bind", _bind(p), *args, ini], cwd
    )


def native(key: str, name: str, exe: str, protocol: str = "http") -> Server:
    return Server(key, name, lambda p: [str(NATIVE / exe), str(p)], BENCH, False, protocol, (NATIVE / exe,))


def gunicorn(key: str, name: str, *worker: str) -> Server:
    return Server(
        key,
        name,
        lambda p: [str(PEER_BIN / "gunicorn"), "--workers", "1", *worker, "--bind", _bind(p), "hello:hello_app"],
        HELLO,
    )


def granian(key: str, flags: Optional[List[str]]) -> Server:
    """flags None: GRANIAN_THREADS, as chosen when the server starts."""
    name = "granian" + (f" ({' '.join(flags) or 'default threads'})" if flags is not None else "")
    return Server(
        key,
        name,
        lambda p: [
            str(PEER_BIN / "granian"), "--interface", "wsgi", "--workers", "1",
            *(GRANIAN_THREADS if flags is None else flags), "--host", "127.0.0.1", "--port", str(p), "hello:hello_app",
        ],
        HELLO,
    )


NATIVE_HTTP_LIB = NATIVE_HTTP / "build" / "libhello_native.so"
NATIVE_THRIFT_LIB = NATIVE_THRIFT / "build" / "libecho_native.so"

S: Dict[str, Server] = {
    s.key: s
    for s in [
        # HTTP hello world (examples/hello's hello_app)
        ours("ours-gevent", GEVENT_DEFAULT, HELLO, "hello.ini", io_threads=0),
        ours("ours-gevent-io1", GEVENT_IO1, HELLO, str(CONFIGS / "hello-gevent-io1.ini"), io_threads=1),
        ours("ours-threads", "ours, threads", HELLO, str(CONFIGS / "hello-threads.ini")),
        ours("ours-native", "ours, native C++ app", NATIVE_HTTP, "app.ini", needs=(NATIVE_HTTP_LIB,)),
        native("raw-asio", "raw Asio, 1 thread, constant reply", "raw_asio_server"),
        native("beast", "Beast, 1 thread", "beast_server"),
        pywsgi("pywsgi", "gevent pywsgi, as baseplate.py", HELLO, "hello.ini"),
        pywsgi("pywsgi-nodelay", "gevent pywsgi + TCP_NODELAY", HELLO, "hello.ini", "--nodelay"),
        gunicorn("gunicorn-sync", "gunicorn sync", "--worker-class", "sync"),
        gunicorn("gunicorn-gevent", "gunicorn gevent", "--worker-class", "gevent"),
        gunicorn(
            "gunicorn-gthread", f"gunicorn gthread ({GTHREAD_THREADS} threads)", "--worker-class", "gthread",
            "--threads", GTHREAD_THREADS,
        ),
        Server(
            "uwsgi",
            "uWSGI",
            lambda p: [
                str(PEER_BIN / "uwsgi"), "--http11-socket", _bind(p), "--wsgi-file", "hello.py",
                "--callable", "hello_app", "--processes", "1", "--threads", UWSGI_THREADS,
                "--disable-logging", "--die-on-term", "--need-app",
            ],
            HELLO,
        ),
        granian("granian", None),
        *(granian(f"granian-{k}", v) for k, v in GRANIAN_VARIANTS.items()),
        Server(
            "bjoern",
            "bjoern",
            lambda p: [str(PEER_PYTHON), str(PEERS / "bjoern_server.py"), "--bind", _bind(p), "hello:hello_app"],
            HELLO,
        ),
        # HTTP, a handler that sleeps 10 ms (bench/apps/sleep10.py)
        ours("sleep-gevent", GEVENT_DEFAULT, APPS, str(CONFIGS / "sleep10-gevent.ini"), io_threads=0),
        ours("sleep-gevent-io1", GEVENT_IO1, APPS, str(CONFIGS / "sleep10-gevent-io1.ini"), io_threads=1),
        ours("sleep-threads", "ours, threads (16, the default)", APPS, str(CONFIGS / "sleep10-threads.ini")),
        ours("sleep-threads50", "ours, threads (python_threads = 50)", APPS, str(CONFIGS / "sleep10-threads50.ini")),
        pywsgi("sleep-pywsgi", "gevent pywsgi, as baseplate.py", APPS, str(CONFIGS / "sleep10-pywsgi.ini")),
        pywsgi(
            "sleep-pywsgi-nodelay", "gevent pywsgi + TCP_NODELAY", APPS, str(CONFIGS / "sleep10-pywsgi.ini"),
            "--nodelay",
        ),
        # HTTP, one call per request to an upstream (bench/apps/upstream.py)
        *(
            replace(s, upstream=True, needs=(NATIVE / "raw_asio_server",))
            for s in (
                ours("upstream-gevent", GEVENT_DEFAULT, APPS, str(CONFIGS / "upstream-gevent.ini"), io_threads=0),
                ours("upstream-gevent-io1", GEVENT_IO1, APPS, str(CONFIGS / "upstream-gevent-io1.ini"),
                     io_threads=1),
                ours("upstream-threads", "ours, threads (python_threads = 50)", APPS,
                     str(CONFIGS / "upstream-threads.ini")),
                pywsgi("upstream-pywsgi-nodelay", "gevent pywsgi + TCP_NODELAY", APPS,
                       str(CONFIGS / "upstream-pywsgi.ini"), "--nodelay"),
            )
        ),
        # native HTTP app with and without a log line per request
        ours("native-nolog", "native, log_each_request = false", NATIVE_HTTP, str(CONFIGS / "native-log-false.ini"),
             needs=(NATIVE_HTTP_LIB,)),
        ours("native-log", "native, log_each_request = true", NATIVE_HTTP, str(CONFIGS / "native-log-true.ini"),
             needs=(NATIVE_HTTP_LIB,)),
        # Thrift echo (examples/thrift_echo)
        ours("thrift-gevent", GEVENT_DEFAULT, THRIFT_ECHO, str(CONFIGS / "echo-gevent.ini"), "thrift", io_threads=0),
        ours("thrift-gevent-io1", GEVENT_IO1, THRIFT_ECHO, str(CONFIGS / "echo-gevent-io1.ini"), "thrift",
             io_threads=1),
        ours("thrift-threads", "ours, threads", THRIFT_ECHO, str(CONFIGS / "echo-threads.ini"), "thrift"),
        ours("thrift-native", "ours, native C++ app", NATIVE_THRIFT, "app.ini", "thrift", (NATIVE_THRIFT_LIB,)),
        Server(
            "thrift-baseplate",
            "baseplate.py's gevent Thrift server",
            lambda p: [str(PEER_PYTHON), str(PEERS / "baseplate_thrift.py"), "--bind", _bind(p), "echo.ini"],
            THRIFT_ECHO,
            protocol="thrift",
        ),
        native("thrift-nb", "Apache Thrift TNonblockingServer (C++)", "thrift_nb_server", "thrift"),
    ]
}

S["granian"].name = f"granian ({' '.join(GRANIAN_THREADS) or 'default threads'})"

HTTP_HELLO = ["ours-gevent", "ours-gevent-io1", "ours-threads", "ours-native", "raw-asio", "beast", "pywsgi",
              "pywsgi-nodelay", "gunicorn-sync", "gunicorn-gevent", "gunicorn-gthread", "uwsgi", "granian", "bjoern"]
# Rows no target judges, shown for context: one round each (not BENCH_REPEATS),
# which keeps the whole `make bench` within its time.
CONTEXT_ONLY = ("pywsgi", "gunicorn-sync", "gunicorn-gevent", "gunicorn-gthread", "sleep-pywsgi")


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Case:
    server: str  # key into S
    load: str  # "wrk" | "half" | "thrift:KIND"
    rounds: Optional[int] = None  # at most this many rounds (None: every round)

    @property
    def label(self) -> str:
        return S[self.server].name + (f" / {self.load[7:]}" if self.load.startswith("thrift:") else "")

    @property
    def key(self) -> str:
        return self.server + (f".{self.load[7:]}" if self.load.startswith("thrift:") else "")


@dataclass
class Scenario:
    name: str
    title: str
    kind: str  # "load", "idle", "soak", "startup", "profile"
    cases: List[Case]
    refs: List[str] = field(default_factory=list)  # server keys the ratio columns compare with
    load_desc: str = ""
    unit: str = "req/s"


def _thrift_cases(servers: List[str]) -> List[Case]:
    return [
        Case(s, f"thrift:{k}")
        for s in servers
        for k in ("framed_binary", "header")
        if not (s == "thrift-nb" and k == "header")  # TNonblockingServer speaks framed binary only
    ]


SCENARIOS: Dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "granian-threads", "granian's thread settings, on the WSGI hello world; http-hello runs the best",
            "load", [Case(f"granian-{k}", "wrk") for k in GRANIAN_VARIANTS], [],
            f"`wrk -t1 -c{CONNECTIONS} --latency`, GET /",
        ),
        Scenario(
            "http-hello", "WSGI hello world (examples/hello), HTTP/1.1 keep-alive, peak load", "load",
            [Case(k, "wrk", 1 if k in CONTEXT_ONLY else None) for k in HTTP_HELLO],
            ["ours-gevent", "ours-threads", "ours-native"],
            f"`wrk -t1 -c{CONNECTIONS} --latency`, GET /",
        ),
        Scenario(
            "http-hello-half", "the same servers at half their own peak (median req/s of http-hello)", "load",
            [Case(k, "half", 1 if k in CONTEXT_ONLY else None) for k in HTTP_HELLO], [],
            f"`http_load 127.0.0.1 PORT {CONNECTIONS} SECONDS RATE` (RATE = half the server's peak; latency"
            " corrected for coordinated omission)",
        ),
        Scenario(
            "http-sleep10", "a WSGI handler that sleeps 10 ms (bench/apps/sleep10.py), then says hello", "load",
            [Case(k, "wrk", 1 if k in CONTEXT_ONLY else None)
             for k in ("sleep-gevent", "sleep-gevent-io1", "sleep-threads", "sleep-threads50", "sleep-pywsgi",
                       "sleep-pywsgi-nodelay")],
            ["sleep-gevent", "sleep-threads50"],
            f"`wrk -t1 -c{CONNECTIONS} --latency` (at most {CONNECTIONS} / 10 ms = 5,000 req/s)",
        ),
        Scenario(
            "http-upstream", "a WSGI handler that makes one HTTP call to an upstream (bench/apps/upstream.py:"
            " a pooled http.client connection to raw_asio_server on the load generator's core)", "load",
            [Case(k, "wrk") for k in ("upstream-gevent", "upstream-gevent-io1", "upstream-threads",
                                      "upstream-pywsgi-nodelay")],
            ["upstream-gevent", "upstream-threads"],
            f"`wrk -t1 -c{CONNECTIONS} --latency`, GET / (the upstream shares the load generator's core)",
        ),
        Scenario(
            "native-log", "examples/native_http, one INFO log line per request (stdout to a file) or none",
            "load", [Case("native-nolog", "wrk"), Case("native-log", "wrk")], ["native-nolog"],
            f"`wrk -t1 -c{CONNECTIONS} --latency`, GET /",
        ),
        Scenario(
            "thrift-ping", "Thrift echo(\"ping\") (examples/thrift_echo's IDL)", "load",
            _thrift_cases(["thrift-gevent", "thrift-gevent-io1", "thrift-threads", "thrift-native", "thrift-baseplate",
                           "thrift-nb"]),
            ["thrift-gevent", "thrift-threads", "thrift-native"],
            f"`thrift_load 127.0.0.1 PORT KIND {CONNECTIONS} SECONDS` (one blocking client thread per connection)",
            unit="calls/s",
        ),
        Scenario(
            "idle-10k", f"{IDLE_COUNT:,} idle keep-alive connections", "idle",
            [Case("ours-gevent", "idle"), Case("ours-threads", "idle")],
            load_desc=f"`idle_conns 127.0.0.1 PORT {IDLE_COUNT} {IDLE_HOLD:g}`",
        ),
        Scenario(
            "soak", "RSS and open fds at a steady load (half of the peak)", "soak", [Case("ours-gevent", "soak")],
            load_desc="`http_load 127.0.0.1 PORT 50 BENCH_SOAK RATE`",
        ),
        Scenario(
            "startup", "spawn to the \"Listening\" log line, and to the first answered GET /", "startup",
            [Case(k, "startup") for k in ("ours-gevent", "ours-threads", "pywsgi", "gunicorn-sync", "granian")],
            load_desc=f"median of {STARTUP_RUNS} starts each",
        ),
        Scenario(
            "profile", "user-space instructions per request, every thread (I/O and Python together), counted by"
            " callgrind (bench/profile.py): examples/hello, default config", "profile",
            [Case("ours-gevent", "profile")],
            load_desc=f"`python3 bench/profile.py --dispatch default --ini examples/hello/hello.ini --seconds"
            f" {PROFILE_SECONDS}`: the server under valgrind, `wrk -t1 -c50` for 1 s and for {PROFILE_SECONDS} s;"
            " the difference in instructions ÷ the difference in requests (a few thousand)",
            unit="instructions/req",
        ),
    ]
}


# --- measuring a process tree --------------------------------------------------------------


def _stat_fields(pid: int) -> List[str]:
    with open(f"/proc/{pid}/stat") as f:
        # comm (field 2) may contain spaces: split after its closing paren.
        return f.read().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> List[int]:
    """pid and all its descendants (gunicorn, granian and uwsgi have workers)."""
    parents: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents.setdefault(int(_stat_fields(int(d))[1]), []).append(int(d))
            except (OSError, IndexError):
                pass
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree rooted at pid.

    /proc/<pid>/stat of a thread-group leader sums every thread of the
    process, including threads that already exited, so one read per process
    covers an event loop, worker threads and the Python interpreter.
    """
    total = 0
    for p in process_tree(pid):
        try:
            fields = _stat_fields(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def open_fds(pid: int) -> int:
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in process_tree(pid) if os.path.isdir(f"/proc/{p}/fd"))


def machine_busy_seconds() -> float:
    """CPU time spent by everything, all cores (first line of /proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def wait_quiet() -> None:
    """Waits (up to QUIET_WAIT) until the machine is idle, so a run does not
    share its cores with a build or a test suite. The tree is shared."""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0 if QUIET_WAIT > 0 else 0.2)
        load = (machine_busy_seconds() - before) / (1.0 if QUIET_WAIT > 0 else 0.2)
        if load <= QUIET_LOAD or QUIET_WAIT <= 0:
            return
        if time.monotonic() > deadline:
            print(f"  warning: machine still busy ({load:.2f} cores); running anyway", flush=True)
            return
        print(f"  machine busy ({load:.2f} cores); waiting", flush=True)
        time.sleep(4.0)


def free_port() -> int:
    # A fresh port per run: several servers bind with SO_REUSEPORT, so a
    # stray server left on a reused port would silently share the load.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port: int, path: str = "/", timeout: float = 2.0) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def thrift_echo_ok(port: int, timeout: float = 2.0) -> bool:
    """One framed binary Echo.echo("ping") call, by hand (no thrift package)."""
    name, arg = b"echo", b"ping"
    body = struct.pack("!Ii", 0x80010001, len(name)) + name + struct.pack("!i", 1)  # strict CALL, seqid 1
    body += struct.pack("!bhi", 11, 1, len(arg)) + arg + b"\x00"  # field 1: string; STOP
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack("!i", len(body)) + body)
            (length,) = struct.unpack("!i", _recv_exact(sock, 4))
            reply = _recv_exact(sock, length)
    except (OSError, ConnectionError, struct.error):
        return False
    return reply[:4] == struct.pack("!I", 0x80010002) and reply.endswith(b"\x0b\x00\x00\x00\x00\x00\x04ping\x00")


def ready(server: Server, port: int) -> bool:
    return thrift_echo_ok(port) if server.protocol == "thrift" else http_ok(port)


def start(server: Server, port: int, log, stdout=None) -> subprocess.Popen:
    missing = [str(p) for p in server.needs if not p.exists()]
    if missing:
        raise Skipped(f"not built: {', '.join(missing)} (bench/run.sh builds it)")
    # taskset execs the server, so proc.pid is the server's own pid.
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *server.command(port)],
        cwd=server.cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **server.env},
        start_new_session=True,  # its own process group: stop() can clean up workers left behind
    )


def wait_ready(server: Server, proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before answering")
        if ready(server, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not answer within {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"  warning: pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it", flush=True)
            proc.kill()
            proc.wait()
    try:  # workers that outlived their master (same process group, started by us)
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


class Skipped(Exception):
    pass


def io_threads_run(log: Path) -> Optional[int]:
    """The io_threads a gevent-dispatch Python server of ours ran with, from
    its start-up lines: 0 (inline I/O), 1 (an I/O thread of its own; the
    count is not logged, our rows use 1), None (no such line)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    if "and so does the network I/O (io_threads = 0)" in text:
        return 0
    if "Python requests run on the gevent hub" in text:
        return 1
    return None


def start_upstream(server: Server) -> Optional[subprocess.Popen]:
    """For a server that calls an upstream: raw_asio_server on the load
    generator's core (so the server's core does only the server's work), its
    address in the server's BENCH_UPSTREAM."""
    if not server.upstream:
        return None
    exe = NATIVE / "raw_asio_server"
    if not exe.exists():
        raise Skipped(f"not built: {exe} (bench/run.sh builds it)")
    port = free_port()
    proc = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPU, str(exe), str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT
    while not http_ok(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError("the upstream (raw_asio_server) did not answer")
        time.sleep(0.05)
    server.env = {**server.env, "BENCH_UPSTREAM": f"127.0.0.1:{port}"}
    return proc


# --- load generators -----------------------------------------------------------------------

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsed wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> Dict[str, float]:
    def find(pattern: str) -> re.Match:
        m = re.search(pattern, out, re.MULTILINE)
        if not m:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
        return m

    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return {
        "rps": float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        "requests": int(find(r"^\s*(\d+) requests in ").group(1)),
        "p50_ms": _ms(find(r"^\s+50%\s+(\S+)").group(1)),
        "p99_ms": _ms(find(r"^\s+99%\s+(\S+)").group(1)),
        "errors": errors,
    }


def parse_json_line(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in the load generator's output:\n{out}")


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", duration)
    if not m:
        raise ValueError(f"bad duration {duration!r} (use e.g. 10s, 1m)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def load_command(case: Case, port: int, secs: float, rate: float) -> Tuple[List[str], Callable[[str], dict]]:
    """argv of the load generator for a case, and the parser of its output."""
    if case.load == "wrk":
        argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{secs:g}s", "--latency", f"http://127.0.0.1:{port}/"]
        return argv, parse_wrk

    if case.load in ("half", "soak"):
        def parse_http_load(out: str) -> dict:
            j = parse_json_line(out)
            return {"rps": j["rps"], "requests": j["requests"], "p50_ms": j["p50_us"] / 1e3,
                    "p99_ms": j["p99_us"] / 1e3, "errors": j["errors"], "rate": rate}
        return [str(NATIVE / "http_load"), "127.0.0.1", str(port), str(CONNECTIONS), f"{secs:g}",
                f"{rate:.0f}", "/"], parse_http_load

    if case.load.startswith("thrift:"):
        def parse_thrift_load(out: str) -> dict:
            j = parse_json_line(out)
            return {"rps": j["calls_per_s"], "requests": j["calls"], "p50_ms": j["p50_us"] / 1e3,
                    "p99_ms": j["p99_us"] / 1e3, "errors": j["errors"]}
        return [str(NATIVE / "thrift_load"), "127.0.0.1", str(port), case.load[7:], str(CONNECTIONS),
                f"{secs:g}", f"{rate:.0f}"], parse_thrift_load

    raise ValueError(case.load)


# --- one run, all runs -----------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    case: str  # Case.key
    round: int
    rps: float = 0.0
    requests: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_req: float = 0.0
    server_cores: float = 0.0  # server CPU time / wall time during the load
    loadgen_cores: float = 0.0  # the same for the load generator
    rss_mb: float = 0.0
    errors: int = 0  # socket errors, non-2xx responses, failed calls
    other_load: float = 0.0  # cores busy with neither the server nor the load generator during the run
    rate: float = 0.0  # offered req/s (http_load), 0 = unbounded
    failed: str = ""  # why there are no numbers
    extra: dict = field(default_factory=dict)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def measure_load(proc: subprocess.Popen, argv: List[str], timeout: float, log_path: str) -> Tuple[str, dict]:
    """Runs the load generator pinned to CLIENT_CPU; the server's CPU, RSS and
    the machine's other load around it."""
    cpu_before, busy_before = cpu_seconds(proc.pid), machine_busy_seconds()
    gen_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    gen = subprocess.run(["taskset", "-c", CLIENT_CPU, *argv], capture_output=True, text=True, timeout=timeout)
    cpu_after, busy_after = cpu_seconds(proc.pid), machine_busy_seconds()
    wall = time.monotonic() - t0
    # The server is reaped only after this, so the children's rusage delta
    # is the load generator's (and taskset's) alone.
    gen_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = sum(getattr(gen_after, f) - getattr(gen_before, f) for f in ("ru_utime", "ru_stime"))
    rss = rss_mb(proc.pid)
    Path(f"{log_path}.load.txt").write_text(" ".join(argv) + "\n" + gen.stdout + gen.stderr)
    if gen.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({gen.returncode}): {(gen.stderr or gen.stdout).strip()[-300:]}")
    if proc.poll() is not None:
        raise RuntimeError(f"server exited with status {proc.returncode} during the run")
    server_cpu = cpu_after - cpu_before
    return gen.stdout, {
        "server_cpu": server_cpu,
        "server_cores": server_cpu / wall,
        "loadgen_cores": gen_cpu / wall,
        "rss_mb": rss,
        "other_load": max(0.0, busy_after - busy_before - server_cpu - gen_cpu) / wall,
    }


class Bench:
    def __init__(self, repeats: int, duration: float, half_duration: float) -> None:
        self.repeats = repeats
        self.duration = duration
        self.half_duration = half_duration
        self.runs: Dict[str, List[Run]] = {}
        self.peaks: Dict[str, float] = {}  # server key -> median peak req/s (http-hello)
        self.notes: Dict[str, List[str]] = {}

    # -- load scenarios --

    def peak_for(self, key: str, proc: subprocess.Popen, port: int, log_path: str) -> float:
        """Median peak of http-hello in this invocation; else a wrk run first, in the same process."""
        if key in self.peaks:
            return self.peaks[key]
        argv, parse = load_command(Case(key, "wrk"), port, self.duration, 0)
        out, _ = measure_load(proc, argv, self.duration + 60, log_path + ".peak")
        return parse(out)["rps"]

    def run_once(self, scenario: Scenario, case: Case, rnd: int) -> Run:
        server = S[case.server]
        port = free_port()
        log_path = str(OUT / f"{scenario.name}.{case.key}.{rnd}")
        upstream = start_upstream(server)
        with open(f"{log_path}.server.log", "w") as log:
            proc = start(server, port, log)
            try:
                wait_ready(server, proc, port)
                secs = self.half_duration if case.load == "half" else self.duration
                rate = self.peak_for(case.server, proc, port, log_path) / 2 if case.load == "half" else 0.0
                argv, parse = load_command(case, port, secs, rate)
                out, m = measure_load(proc, argv, secs + 60, log_path)
            finally:
                stop(proc)
                if upstream is not None:
                    stop(upstream)
        r = parse(out)
        extra = {}
        if server.io_threads is not None:
            extra["io_threads"] = io_threads_run(Path(f"{log_path}.server.log"))
        return Run(
            scenario=scenario.name,
            case=case.key,
            round=rnd,
            rps=r["rps"],
            requests=int(r["requests"]),
            p50_ms=r["p50_ms"],
            p99_ms=r["p99_ms"],
            cpu_us_per_req=m["server_cpu"] * 1e6 / max(r["requests"], 1),
            server_cores=m["server_cores"],
            loadgen_cores=m["loadgen_cores"],
            rss_mb=m["rss_mb"],
            errors=int(r["errors"]),
            other_load=m["other_load"],
            rate=rate,
            extra=extra,
        )

    def run_load(self, scenario: Scenario) -> List[Run]:
        runs: List[Run] = []
        skipped: Dict[str, str] = {}
        for rnd in range(1, self.repeats + 1):
            for case in scenario.cases:  # interleaved: every case once per round
                if case.key in skipped or (case.rounds is not None and rnd > case.rounds):
                    continue
                r: Optional[Run] = None
                for attempt in range(1, ATTEMPTS + 1):
                    wait_quiet()
                    try:
                        r = self.run_once(scenario, case, rnd)
                    except Skipped as e:
                        skipped[case.key] = str(e)
                        r = Run(scenario.name, case.key, rnd, failed=f"skipped: {e}")
                        break
                    except Exception as e:  # noqa: BLE001 - one server failing must not end the bench
                        r = Run(scenario.name, case.key, rnd, failed=f"{type(e).__name__}: {e}")
                        traceback.print_exc()
                        break
                    if r.other_load <= NOISY_LOAD:
                        break
                    verdict = "redoing it" if attempt < ATTEMPTS else "keeping it anyway"
                    print(f"  {case.label}: {r.other_load:.2f} cores of other load during the run; {verdict}", flush=True)
                assert r is not None
                if r.failed:
                    print(f"  [{scenario.name} round {rnd}/{self.repeats}] {case.label:45s} FAILED: {r.failed}", flush=True)
                else:
                    print(
                        f"  [{scenario.name} round {rnd}/{self.repeats}] {case.label:45s} {r.rps:9.0f} {scenario.unit}"
                        f"  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  {r.cpu_us_per_req:6.1f} us CPU/req"
                        f"  cores {r.server_cores:.2f}/{r.loadgen_cores:.2f}  {r.rss_mb:5.1f} MB"
                        f"  other {r.other_load:.2f}" + (f"  {r.errors} errors" if r.errors else ""),
                        flush=True,
                    )
                runs.append(r)
        few = [c.label for c in scenario.cases if c.rounds is not None and c.rounds < self.repeats]
        if few:
            self.notes.setdefault(scenario.name, []).append(
                f"{', '.join(few)}: {min(c.rounds or 1 for c in scenario.cases if c.label in few)} round only"
                " (no target judges them; shown for context).")
        if scenario.name == "granian-threads":
            self.choose_granian(scenario, runs)
        if scenario.name == "http-hello":
            for case in scenario.cases:
                ok = [r.rps for r in runs if r.case == case.key and not r.failed]
                if ok:
                    self.peaks[case.server] = statistics.median(ok)
        return runs

    def choose_granian(self, scenario: Scenario, runs: List[Run]) -> None:
        """Keeps granian's best thread settings for http-hello: the highest median
        req/s, or the least CPU per request if wrk was saturated."""
        global GRANIAN_THREADS
        sums = [s for s in summarise(scenario, runs).values() if not s.failed]
        if not sums:
            return
        if any(s.saturated for s in sums):
            best = min(sums, key=lambda s: s.cpu)
        else:
            best = max(sums, key=lambda s: s.rps)
        GRANIAN_THREADS = list(GRANIAN_VARIANTS[best.server[len("granian-"):]])
        S["granian"].name = best.label
        self.notes.setdefault(scenario.name, []).append(f"Kept for http-hello: {best.label}.")
        print(f"  granian: keeping {best.label}", flush=True)

    # -- idle connections --

    def run_idle(self, scenario: Scenario) -> List[Run]:
        runs = []
        for rnd in range(1, self.repeats + 1):
            for case in scenario.cases:
                wait_quiet()
                try:
                    r = self.idle_once(scenario, case, rnd)
                except Skipped as e:
                    r = Run(scenario.name, case.key, rnd, failed=f"skipped: {e}")
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc()
                    r = Run(scenario.name, case.key, rnd, failed=f"{type(e).__name__}: {e}")
                x = r.extra
                print(f"  [{scenario.name} round {rnd}/{self.repeats}] {case.label:32s} "
                      + (f"FAILED: {r.failed}" if r.failed else
                         f"RSS {x['rss_before']:.1f} -> {x['rss_with']:.1f} MB (+{x['growth_mb']:.1f}),"
                         f" fds {x['fds_before']} -> {x['fds_with']}, probes {x['probes_ok']}/{x['probes']}"
                         f" p50 {x['probe_ms']:.2f} ms, {json.dumps(x['idle_conns'])}"), flush=True)
                runs.append(r)
        return runs

    def idle_once(self, scenario: Scenario, case: Case, rnd: int) -> Run:
        server = S[case.server]
        exe = NATIVE / "idle_conns"
        if not exe.exists():
            raise Skipped(f"not built: {exe}")
        port = free_port()
        log_path = str(OUT / f"{scenario.name}.{case.key}.{rnd}")
        with open(f"{log_path}.server.log", "w") as log:
            proc = start(server, port, log)
            try:
                wait_ready(server, proc, port)
                time.sleep(1.0)
                rss_before, fds_before = rss_mb(proc.pid), open_fds(proc.pid)
                gen = subprocess.Popen(
                    ["taskset", "-c", CLIENT_CPU, str(exe), "127.0.0.1", str(port), str(IDLE_COUNT), f"{IDLE_HOLD:g}"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
                lines: List[str] = []
                t0 = time.monotonic()
                ready_line = None
                assert gen.stdout is not None
                for line in gen.stdout:
                    lines.append(line)
                    if line.startswith("ready"):
                        ready_line = line.strip()
                        break
                open_s = time.monotonic() - t0
                if ready_line is None:
                    gen.wait()
                    raise RuntimeError(f"idle_conns ended without 'ready': {''.join(lines)[-300:]}")
                time.sleep(min(1.0, IDLE_HOLD / 4))
                rss_with, fds_with = rss_mb(proc.pid), open_fds(proc.pid)
                # the server still answers new connections while the idle ones are held
                lat = []
                for _ in range(20):
                    t = time.monotonic()
                    if http_ok(port, timeout=5.0):
                        lat.append((time.monotonic() - t) * 1e3)
                rest = gen.stdout.read()
                gen.wait(IDLE_HOLD + 120)
                lines.append(rest)
                Path(f"{log_path}.load.txt").write_text("".join(lines))
                result = parse_json_line("".join(lines))
                time.sleep(1.0)
                rss_after, fds_after = rss_mb(proc.pid), open_fds(proc.pid)
            finally:
                stop(proc)
        return Run(
            scenario.name, case.key, rnd, rss_mb=rss_with, errors=int(result.get("errors", 0)),
            extra={
                "rss_before": rss_before, "rss_with": rss_with, "rss_after": rss_after,
                "growth_mb": rss_with - rss_before, "fds_before": fds_before, "fds_with": fds_with,
                "fds_after": fds_after, "open_s": open_s, "ready": ready_line, "probes": 20, "probes_ok": len(lat),
                "probe_ms": statistics.median(lat) if lat else float("nan"), "idle_conns": result,
            },
        )

    # -- soak --

    def run_soak(self, scenario: Scenario) -> List[Run]:
        case = scenario.cases[0]
        server = S[case.server]
        wait_quiet()
        port = free_port()
        log_path = str(OUT / f"{scenario.name}.{case.key}.1")
        try:
            if not (NATIVE / "http_load").exists():
                raise Skipped(f"not built: {NATIVE / 'http_load'}")
            with open(f"{log_path}.server.log", "w") as log:
                proc = start(server, port, log)
                try:
                    wait_ready(server, proc, port)
                    rate = self.peak_for(case.server, proc, port, log_path) / 2
                    time.sleep(1.0)
                    fds_before, rss_start = open_fds(proc.pid), rss_mb(proc.pid)
                    argv, parse = load_command(case, port, SOAK_SECONDS, rate)
                    result: Dict[str, dict] = {}

                    def load() -> None:
                        out, m = measure_load(proc, argv, SOAK_SECONDS + 120, log_path)
                        result["r"], result["m"] = parse(out), m

                    loader = threading.Thread(target=load)
                    t0 = time.monotonic()
                    loader.start()
                    samples = []
                    while loader.is_alive():
                        loader.join(SOAK_INTERVAL)
                        if loader.is_alive() and proc.poll() is None:
                            samples.append((round(time.monotonic() - t0, 1), rss_mb(proc.pid), open_fds(proc.pid)))
                            print(f"  [soak] t={samples[-1][0]:6.0f} s  RSS {samples[-1][1]:6.1f} MB"
                                  f"  fds {samples[-1][2]}", flush=True)
                    if "r" not in result:
                        raise RuntimeError("the soak load failed (see bench/out)")
                    time.sleep(2.0)
                    fds_after, rss_end = open_fds(proc.pid), rss_mb(proc.pid)
                finally:
                    stop(proc)
        except Skipped as e:
            return [Run(scenario.name, case.key, 1, failed=f"skipped: {e}")]
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return [Run(scenario.name, case.key, 1, failed=f"{type(e).__name__}: {e}")]
        r, m = result["r"], result["m"]
        warm = min(60.0, SOAK_SECONDS / 3)
        steady = [s[1] for s in samples if s[0] > warm] or [s[1] for s in samples]
        med = statistics.median(steady) if steady else float("nan")
        return [Run(
            scenario.name, case.key, 1, rps=r["rps"], requests=r["requests"], p50_ms=r["p50_ms"],
            p99_ms=r["p99_ms"], cpu_us_per_req=m["server_cpu"] * 1e6 / max(r["requests"], 1),
            server_cores=m["server_cores"], loadgen_cores=m["loadgen_cores"], rss_mb=rss_end, errors=r["errors"],
            other_load=m["other_load"], rate=rate,
            extra={
                "seconds": SOAK_SECONDS, "warmup_s": warm, "samples": samples, "rss_start": rss_start,
                "rss_end": rss_end, "rss_min": min(steady) if steady else float("nan"),
                "rss_max": max(steady) if steady else float("nan"), "rss_median": med,
                "fds_before": fds_before, "fds_after": fds_after,
                "fds_max": max((s[2] for s in samples), default=0),
            },
        )]

    # -- instructions per request (callgrind) --

    def run_profile(self, scenario: Scenario) -> List[Run]:
        """bench/profile.py on the default config of examples/hello: instructions
        per request, every thread. Not timed, so not interleaved nor repeated."""
        case = scenario.cases[0]
        log_path = OUT / f"{scenario.name}.{case.key}.1.txt"
        missing = [t for t in ("valgrind", "callgrind_annotate", "wrk") if shutil.which(t) is None]
        if missing:
            why = f"not measured: {', '.join(missing)} not installed (apt-get install valgrind)"
            print(f"  [profile] {why}", flush=True)
            return [Run(scenario.name, case.key, 1, failed=why)]
        argv = [sys.executable, str(BENCH / "profile.py"), "--dispatch", "default", "--ini",
                str(HELLO / "hello.ini"), "--seconds", str(PROFILE_SECONDS), "--top", "8"]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=PROFILE_TIMEOUT)
            log_path.write_text(" ".join(argv) + "\n" + p.stdout + p.stderr)
            if p.returncode != 0:
                raise RuntimeError(f"bench/profile.py failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
            x = parse_profile(p.stdout)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            return [Run(scenario.name, case.key, 1, failed=f"{type(e).__name__}: {e}")]
        x["seconds"] = round(time.monotonic() - t0, 1)
        # inline I/O runs everything on the main thread; an I/O thread of its own shows as another thread
        x["io_threads"] = 0 if [t for t, _ in x["threads"]] == [1] else 1
        print(f"  [profile] {x['total']:,} instructions/request over {x['requests']:,} requests"
              f" (threads: {', '.join(f'{t}: {n:,}' for t, n in x['threads'])}) in {x['seconds']:.0f} s", flush=True)
        return [Run(scenario.name, case.key, 1, requests=x["requests"], extra=x)]

    # -- start-up --

    def run_startup(self, scenario: Scenario) -> List[Run]:
        runs = []
        for rnd in range(1, STARTUP_RUNS + 1):
            for case in scenario.cases:  # interleaved
                if rnd == 1 or rnd % 5 == 0:
                    wait_quiet()
                try:
                    listen_ms, answer_ms = self.startup_once(scenario, case, rnd)
                    r = Run(scenario.name, case.key, rnd, extra={"listening_ms": listen_ms, "answer_ms": answer_ms})
                except Exception as e:  # noqa: BLE001
                    r = Run(scenario.name, case.key, rnd, failed=f"{type(e).__name__}: {e}")
                runs.append(r)
            done = [r for r in runs if r.round == rnd]
            print(f"  [startup {rnd}/{STARTUP_RUNS}] " + ", ".join(
                f"{S[r.case].name}: " + ("FAILED" if r.failed else
                                        f"{_fmt(r.extra['listening_ms'], 0)} / {r.extra['answer_ms']:.0f} ms")
                for r in done), flush=True)
        return runs

    def startup_once(self, scenario: Scenario, case: Case, rnd: int) -> Tuple[Optional[float], float]:
        server = S[case.server]
        port = free_port()
        log_path = OUT / f"{scenario.name}.{case.key}.{rnd}.server.log"
        listening: List[float] = []
        with open(log_path, "w") as log:
            t0 = time.monotonic()
            proc = start(server, port, log, stdout=subprocess.PIPE)

            def read() -> None:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.decode(errors="replace")
                    if not listening and "Listening" in line:
                        listening.append(time.monotonic())
                    log.write(line)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                deadline = t0 + START_TIMEOUT
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"server exited with status {proc.returncode}")
                    if http_ok(port, timeout=1.0):
                        answered = time.monotonic()
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("no answer")
                    time.sleep(0.002)
                time.sleep(0.05)  # the log line may trail the first answer by a little
            finally:
                stop(proc)
                reader.join(5)
        return ((listening[0] - t0) * 1e3 if listening else None), (answered - t0) * 1e3


def parse_profile(out: str) -> dict:
    """bench/profile.py's output: requests counted, instructions per request
    per thread and in all, the functions with the largest self cost."""
    m = re.search(r"^== .*: (\d+) - (\d+) = (\d+) requests", out, re.M)
    tot = re.search(r"^\s+all\s+:\s+([\d,]+)", out, re.M)
    if not m or not tot:
        raise ValueError(f"unparsed bench/profile.py output:\n{out[-500:]}")
    threads = [(int(t), int(n.replace(",", ""))) for t, n in re.findall(r"^\s+thread\s+(\d+):\s+([\d,]+)", out, re.M)]
    top = [(int(n.replace(",", "")), f.strip()) for n, f in
           re.findall(r"^\s+([\d,]+)\s{2}(\S.*)$", out.split("top ", 1)[1], re.M)] if "top " in out else []
    return {"requests": int(m.group(3)), "total": int(tot.group(1).replace(",", "")), "threads": threads, "top": top}


def profile_flag(x: dict) -> str:
    """Said where the profiled default config ran with an I/O thread, not the inline I/O its label names."""
    want = S["ours-gevent"].io_threads
    return "" if want is None or x.get("io_threads", want) == want else f" — **ran with io_threads = {x['io_threads']}**"


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return "—" if v is None or v != v else f"{v:,.{digits}f}"


# --- report -------------------------------------------------------------------------------


def _sh(cmd: List[str], **kw) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw).stdout.strip()
    except OSError:
        return "?"


def machine_info() -> Dict[str, str]:
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = _sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    if _sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    versions = _sh([str(PEER_PYTHON), "-c", (
        "import importlib.metadata as m\n"
        "for p in ('gevent','thrift','gunicorn','granian','bjoern','uwsgi'):\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, '?')")])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "os": _sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "peers": ", ".join(versions.splitlines()),
        "wrk": _sh(["sh", "-c", "wrk -v 2>&1 | head -1"]).split(" Copyright")[0],
        "commit": commit,
        "loadavg": open("/proc/loadavg").read().split(" ")[0],
    }


def med(runs: List[Run], attr: str) -> float:
    vals = [getattr(r, attr) for r in runs if not r.failed]
    return statistics.median(vals) if vals else float("nan")


@dataclass
class Summary:
    """Medians of one case."""

    label: str
    server: str
    ours: bool
    n: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu: float
    server_cores: float
    loadgen_cores: float
    rss_mb: float
    errors: int
    rate: float
    failed: str

    @property
    def saturated(self) -> bool:
        return self.loadgen_cores >= SATURATED


def summarise(scenario: Scenario, runs: List[Run]) -> Dict[str, Summary]:
    out = {}
    for case in scenario.cases:
        rs = [r for r in runs if r.case == case.key]
        ok = [r for r in rs if not r.failed]
        label = case.label
        want = S[case.server].io_threads
        ran = {r.extra.get("io_threads") for r in ok if "io_threads" in r.extra}
        if want is not None and ran and ran != {want}:
            label += " — **ran with io_threads = " + ", ".join(
                "?" if v is None else str(v) for v in sorted(ran, key=lambda v: -1 if v is None else v)) + "**"
        out[case.key] = Summary(
            label, case.server, S[case.server].ours, len(ok), med(rs, "rps"), med(rs, "p50_ms"),
            med(rs, "p99_ms"), med(rs, "cpu_us_per_req"), med(rs, "server_cores"), med(rs, "loadgen_cores"),
            med(rs, "rss_mb"), sum(r.errors for r in ok), med(rs, "rate"),
            "" if ok else (rs[0].failed if rs else "not run"),
        )
    return out


def ref_case(scenario: Scenario, case: Case, ref_server: str) -> Optional[str]:
    for c in scenario.cases:
        if c.server == ref_server and c.load == case.load:
            return c.key
    return None


def ratio_cell(ours: Summary, this: Summary) -> str:
    """ours ÷ this on throughput, this ÷ ours on CPU per request: above 1, ours is better."""
    if ours.failed or this.failed:
        return "—"
    return f"{ours.rps / this.rps:.2f}× · {this.cpu / ours.cpu:.2f}×"


def load_table(scenario: Scenario, sums: Dict[str, Summary]) -> List[str]:
    unit = scenario.unit
    per = "call" if unit == "calls/s" else "req"
    half = scenario.name == "http-hello-half"
    head = ["server", *(["offered req/s"] if half else []), unit, "p50 ms", "p99 ms", f"server CPU µs/{per}",
            "server cores", "load-gen cores", "RSS MB"]
    refs = [r for r in scenario.refs if any(c.server == r for c in scenario.cases)]
    head += [f"vs {S[r].name}" for r in refs]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for case in scenario.cases:
        s = sums[case.key]
        if s.failed:
            why = s.failed if len(s.failed) <= 160 else s.failed[:160] + "… (see bench/out)"
            lines.append(f"| {s.label} | **{why}** |" + " |" * (len(head) - 2))
            continue
        cells = [s.label]
        if half:
            cells.append(f"{s.rate:,.0f}")
        cells += [f"{s.rps:,.0f}", f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.cpu:.1f}",
                  f"{s.server_cores:.2f}", f"{s.loadgen_cores:.2f}" + (" ⚠" if s.saturated else ""),
                  f"{s.rss_mb:.1f}"]
        for r in refs:
            k = ref_case(scenario, case, r)
            cells.append("—" if k is None or k == case.key else ratio_cell(sums[k], s))
        if s.errors:
            cells[0] += f" (**{s.errors} errors**)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass
class Target:
    text: str
    value: str
    basis: str
    met: Optional[bool]  # None: not measured


def compare(sums: Dict[str, Summary], ours_key: str, peer_key: str, need: float, basis: str = "auto",
            per: str = "req") -> Tuple[str, str, Optional[bool]]:
    """ours vs peer: ratio >= need? On req/s, unless either load generator was
    saturated (or basis = "cpu"): then on server CPU per request."""
    o, p = sums.get(ours_key), sums.get(peer_key)
    if o is None or p is None or o.failed or p.failed:
        return "not measured", "", None
    if basis == "auto":
        basis = "cpu" if (o.saturated or p.saturated) else "rps"
    if basis == "cpu":
        ratio = p.cpu / o.cpu
        how = (f"CPU/{per}: {p.cpu:.1f} ÷ {o.cpu:.1f} µs"
               + (" (load generator saturated)" if (o.saturated or p.saturated) else ""))
    else:
        ratio = o.rps / p.rps
        how = f"{'calls' if per == 'call' else 'req'}/s: {o.rps:,.0f} ÷ {p.rps:,.0f}"
    return f"{ratio:.2f}×", how, ratio >= need


SLEEP_IDEAL = CONNECTIONS / 0.010  # http-sleep10: 50 connections, 10 ms each: 5,000 req/s


def targets(results: Dict[str, List[Run]]) -> List[Target]:
    """The performance targets of the project, each naming the rows it judges
    (scenario: "row label"). Ratios come from the same interleaved run."""
    t: List[Target] = []
    sums = {name: summarise(SCENARIOS[name], runs) for name, runs in results.items() if SCENARIOS[name].kind == "load"}

    def row(key: str) -> str:
        label = S[key].name
        for sc in sums.values():  # a row whose server ran with another io_threads says so
            for k, v in sc.items():
                if (k == key or k.startswith(key + ".")) and " — **ran with" in v.label:
                    return f"“{label}{v.label[v.label.index(' — **ran with'):]}”"
        return f"“{label}”"

    def add(text: str, ok: Tuple[str, str, Optional[bool]]) -> None:
        t.append(Target(text, ok[0], ok[1], ok[2]))

    def none(text: str, why: str = "") -> None:
        t.append(Target(text, "not measured", why, None))

    # 1. Python WSGI hello, default config (http-hello; instructions: profile)
    h = sums.get("http-hello", {})
    d = row("ours-gevent")
    add(f"WSGI hello, default config — http-hello, {d} vs {row('raw-asio')}: ≥ 0.85× on server CPU/req",
        compare(h, "ours-gevent", "raw-asio", 0.85, basis="cpu"))
    for peer, need in (("granian", 1.5), ("bjoern", 1.3), ("pywsgi-nodelay", 15.0)):
        add(f"WSGI hello, default config — http-hello, {d} vs {row(peer)}: ≥ {need:g}×", compare(h, "ours-gevent", peer, need))
    text = (f"WSGI hello, default config — profile, {d}: ≤ 8,000 user-space instructions/req,"
            " all threads (I/O and Python)")
    prof = results.get("profile", [])
    if prof and not prof[0].failed:
        x = prof[0].extra
        t.append(Target(text, f"{x['total']:,} ({x['total'] / 8000:.2f}× the limit)",
                        f"callgrind, {x['requests']:,} requests; by thread: "
                        + ", ".join(f"{n:,}" for _, n in x["threads"]) + profile_flag(x), x["total"] <= 8000))
    else:
        none(text, prof[0].failed if prof else "")

    # 2. p99 at half of each server's own peak
    half = sums.get("http-hello-half", {})
    o = half.get("ours-gevent")

    def p99(peer: str, need: float, strict: bool) -> Tuple[str, str, Optional[bool]]:
        p = half.get(peer)
        if o is None or p is None or o.failed or p.failed:
            return "not measured", "", None
        ratio = o.p99_ms / p.p99_ms
        met = ratio < need if strict else ratio <= need
        return (f"{ratio:.2f}×", f"p99: {o.p99_ms:.2f} ÷ {p.p99_ms:.2f} ms (offered {o.rate:,.0f} / {p.rate:,.0f} req/s)",
                met)

    for peer in ("bjoern", "uwsgi", "granian"):
        add(f"p99 at half peak — http-hello-half, {d} vs {row(peer)}: lower (ratio < 1)", p99(peer, 1.0, True))
    add(f"p99 at half peak — http-hello-half, {d} vs {row('raw-asio')}: ≤ 1.5×", p99("raw-asio", 1.5, False))

    # 3. the 10 ms sleep, 50 connections
    sl = sums.get("http-sleep10", {}).get("sleep-gevent")
    for text, fn in (
        (f"10 ms sleep — http-sleep10, {row('sleep-gevent')}: ≥ 0.95 of the {SLEEP_IDEAL:,.0f} req/s ideal",
         lambda s: (f"{s.rps / SLEEP_IDEAL:.3f}", f"{s.rps:,.0f} ÷ {SLEEP_IDEAL:,.0f} req/s", s.rps >= 0.95 * SLEEP_IDEAL)),
        (f"10 ms sleep — http-sleep10, {row('sleep-gevent')}: p99 ≤ 12 ms",
         lambda s: (f"{s.p99_ms:.2f} ms ({s.p99_ms / 12:.2f}× the limit)", "p99 of wrk", s.p99_ms <= 12.0)),
    ):
        if sl is None or sl.failed:
            none(text)
        else:
            add(text, fn(sl))

    # 4. Thrift ping, gevent default vs baseplate.py's gevent Thrift server
    th = sums.get("thrift-ping", {})
    for kind in ("framed_binary", "header"):
        add(f"Thrift ping — thrift-ping, {row('thrift-gevent')} / {kind} vs {row('thrift-baseplate')} / {kind}: ≥ 3×",
            compare(th, f"thrift-gevent.{kind}", f"thrift-baseplate.{kind}", 3.0, per="call"))

    # 5. one upstream call per request
    up = sums.get("http-upstream", {})
    add(f"Upstream call — http-upstream, {row('upstream-gevent')} vs {row('upstream-pywsgi-nodelay')}: ≥ 5×",
        compare(up, "upstream-gevent", "upstream-pywsgi-nodelay", 5.0))
    text = f"Upstream call — http-upstream, {row('upstream-gevent')} vs {row('upstream-pywsgi-nodelay')}: p99 lower"
    uo, up_ = up.get("upstream-gevent"), up.get("upstream-pywsgi-nodelay")
    if uo is None or up_ is None or uo.failed or up_.failed:
        none(text)
    else:
        t.append(Target(text, f"{uo.p99_ms / up_.p99_ms:.2f}×", f"p99: {uo.p99_ms:.2f} ÷ {up_.p99_ms:.2f} ms",
                        uo.p99_ms < up_.p99_ms))

    # 6. native apps
    add(f"Native HTTP hello — http-hello, {row('ours-native')} vs {row('raw-asio')}: ≥ 0.9× on server CPU/req",
        compare(h, "ours-native", "raw-asio", 0.9, basis="cpu"))
    add(f"Native Thrift ping — thrift-ping, {row('thrift-native')} / framed_binary vs {row('thrift-nb')}:"
        " ≥ 1.5× on server CPU/call",
        compare(th, "thrift-native.framed_binary", "thrift-nb.framed_binary", 1.5, basis="cpu", per="call"))

    # 7. no regressions: idle connections, soak, start-up
    idle = results.get("idle-10k", [])
    for k in ("ours-gevent", "ours-threads"):
        rs = [r for r in idle if r.case == k and not r.failed]
        text = (f"No regression — idle-10k, {row(k)}: {IDLE_COUNT:,} idle keep-alive connections, < 100 MB RSS"
                " growth, still answering")
        if not rs:
            none(text)
            continue
        growth = statistics.median(r.extra["growth_mb"] for r in rs)
        j = rs[0].extra["idle_conns"]
        answered = all(r.extra["probes_ok"] == r.extra["probes"] and r.extra["idle_conns"].get("answered_last")
                       == IDLE_COUNT and r.extra["idle_conns"].get("opened") == IDLE_COUNT for r in rs)
        t.append(Target(text, f"+{growth:.1f} MB ({growth / 100:.2f}× the limit)",
                        f"opened {j.get('opened')}, answered {j.get('answered_last')}"
                        f" after the hold; new GETs answered: {'yes' if answered else 'NO'}",
                        growth < 100 and answered))
    soak = [r for r in results.get("soak", []) if not r.failed]
    text = f"No regression — soak, {row('ours-gevent')}: RSS flat (±5%) at a steady half of its peak"
    if soak:
        x = soak[0].extra
        dev = max(x["rss_max"] / x["rss_median"] - 1, 1 - x["rss_min"] / x["rss_median"])
        t.append(Target(text, f"±{dev * 100:.1f}% ({dev / 0.05:.2f}× the limit)",
                        f"{x['seconds']:g} s, {len(x['samples'])} samples, first"
                        f" {x['warmup_s']:.0f} s excluded; min {x['rss_min']:.1f}, max {x['rss_max']:.1f} MB",
                        (dev <= 0.05) if x["seconds"] >= 600 else None))
        if x["seconds"] < 600:
            t[-1].basis += " (shorter than the 10 minutes of the target: not judged)"
    else:
        none(text)
    st = [r for r in results.get("startup", []) if r.case == "ours-gevent" and not r.failed]
    text = f"No regression — startup, {row('ours-gevent')} (examples/hello): to \"Listening\" under 300 ms"
    vals = [r.extra["listening_ms"] for r in st if r.extra["listening_ms"] is not None]
    if vals:
        v = statistics.median(vals)
        t.append(Target(text, f"{v:.0f} ms ({v / 300:.2f}× the limit)", f"median of {len(vals)} starts", v < 300))
    elif st:
        t.append(Target(text, "no \"Listening\" line", f"in {len(st)} starts that answered GET / (see bench/out)", False))
    else:
        none(text)
    return t


def write_results(path: Path, results: Dict[str, List[Run]], info: Dict[str, str], args: argparse.Namespace,
                  command: str, png: Optional[Path], notes: Dict[str, List[str]]) -> None:
    L = [
        "# Benchmark results",
        "",
        "Written by bench/harness.py; bench/README.md says what each scenario measures and how.",
        "",
        f"- Date: {info['date']}; the whole run took {info['elapsed']}",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}; {info['os']}, Linux {info['kernel']}",
        f"- Load average (1 min) before / after: {info['loadavg']} / {info['loadavg_after']}",
        f"- Software: Python {info['python']}; {info['peers']}; {info['wrk']}; commit {info['commit']}",
        f"- Server pinned to core {SERVER_CPU}, load generator to core {CLIENT_CPU};"
        f" {args.repeats} interleaved rounds of {args.duration} per case (http-hello-half: {args.half_duration});"
        " medians shown",
        f"- Reproduce: `{command}`",
    ]
    if png is not None and png.exists():
        L += ["", f"![median throughput per server]({os.path.relpath(png, path.parent)})"]
    L += [
        "",
        "Columns: *server cores* and *load-gen cores* are CPU time ÷ wall time during the load; a load"
        f" generator at ≥ {SATURATED} cores (⚠) is likely the limit, so there compare server CPU per"
        " request, not req/s. *vs X* cells read `A× · B×`: X's req/s ÷ this one's, and this one's CPU"
        " per request ÷ X's (above 1: X is faster / cheaper).",
    ]
    tl = targets(results)
    L += ["", "## Targets", "", "| target | measured | compared on | met |", "|---|---|---|---|"]
    for x in tl:
        verdict = "not measured" if x.met is None else ("met" if x.met else "**not met**")
        L.append(f"| {x.text} | {x.value} | {x.basis} | {verdict} |")
    for name, runs in results.items():
        sc = SCENARIOS[name]
        L += ["", f"## {name}", "", f"{sc.title}. Load: {sc.load_desc}.", ""]
        if sc.kind == "load":
            L += load_table(sc, summarise(sc, runs))
            if notes.get(name):
                L += ["", *notes[name]]
        elif sc.kind == "idle":
            L += ["| server | RSS before MB | RSS with the connections MB | growth MB | KB per connection"
                  " | RSS after they close MB | fds with | opened | answered after the hold | new GETs answered"
                  " (p50 ms) | time to open s |", "|---|" + "---:|" * 10]
            for case in sc.cases:
                rs = [r for r in runs if r.case == case.key]
                ok = [r for r in rs if not r.failed]
                if not ok:
                    L.append(f"| {case.label} | **{rs[0].failed if rs else 'not run'}** |" + " |" * 9)
                    continue

                def m(k: str) -> float:
                    return statistics.median(r.extra[k] for r in ok)
                j = ok[0].extra["idle_conns"]
                L.append(f"| {case.label} | {m('rss_before'):.1f} | {m('rss_with'):.1f} | {m('growth_mb'):.1f}"
                         f" | {m('growth_mb') * 1024 / IDLE_COUNT:.1f} | {m('rss_after'):.1f} | {m('fds_with'):.0f}"
                         f" | {j.get('opened')} | {j.get('answered_last')}"
                         f" | {min(r.extra['probes_ok'] for r in ok)}/20 ({m('probe_ms'):.2f}) | {m('open_s'):.1f} |")
        elif sc.kind == "soak":
            r = runs[0]
            if r.failed:
                L.append(f"**{r.failed}**")
            else:
                x = r.extra
                L += [
                    f"{S[r.case].name}, offered {r.rate:,.0f} req/s (half its peak) for {x['seconds']:g} s:"
                    f" served {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms,"
                    f" {r.cpu_us_per_req:.1f} µs CPU/req, {r.errors} errors.",
                    "",
                    "| RSS MB at start | min (after warm-up) | median | max | ratio max ÷ min | at the end"
                    " | open fds before | max during | after |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
                    f"| {x['rss_start']:.1f} | {x['rss_min']:.1f} | {x['rss_median']:.1f} | {x['rss_max']:.1f}"
                    f" | {x['rss_max'] / x['rss_min']:.3f} | {x['rss_end']:.1f} | {x['fds_before']}"
                    f" | {x['fds_max']} | {x['fds_after']} |",
                    "",
                    f"Warm-up excluded: the first {x['warmup_s']:.0f} s. Samples (s, RSS MB, fds): "
                    + ", ".join(f"{t:g}: {rss:.1f}, {fd}" for t, rss, fd in x["samples"]),
                ]
        elif sc.kind == "profile":
            r = runs[0]
            if r.failed:
                L.append(f"**{r.failed}**")
            else:
                x = r.extra
                L += ["| config | requests counted | instructions/req, all threads | by thread (1 = main) |",
                      "|---|---:|---:|---|",
                      f"| {S[r.case].name}{profile_flag(x)} (examples/hello/hello.ini) | {x['requests']:,} | {x['total']:,}"
                      f" | {', '.join(f'{t}: {n:,}' for t, n in x['threads'])} |", "",
                      "Largest self costs (instructions/req): "
                      + "; ".join(f"{f[:80]} {n:,}".replace("|", "\\|") for n, f in x["top"]) + "."]
        elif sc.kind == "startup":
            L += ["| server | to \"Listening\" ms, median (min–max) | to first answer ms, median (min–max) |",
                  "|---|---:|---:|"]
            for case in sc.cases:
                ok = [r for r in runs if r.case == case.key and not r.failed]
                if not ok:
                    bad = [r for r in runs if r.case == case.key]
                    L.append(f"| {case.label} | **{bad[0].failed if bad else 'not run'}** | |")
                    continue
                lv = [r.extra["listening_ms"] for r in ok if r.extra["listening_ms"] is not None]
                av = [r.extra["answer_ms"] for r in ok]
                lcell = f"{statistics.median(lv):.0f} ({min(lv):.0f}–{max(lv):.0f})" if lv else "no such line"
                L.append(f"| {case.label} | {lcell} | {statistics.median(av):.0f} ({min(av):.0f}–{max(av):.0f}) |")
    # The profile of where a request's CPU goes, and the next steps for the
    # targets not met: written by hand from bench/profile.py's output.
    profile_notes = BENCH / "PROFILE.md"
    if profile_notes.exists():
        L += ["", profile_notes.read_text().rstrip()]
    L += ["", "## Every run", "",
          "In the order run, per case: req/s; server CPU µs/req; p99 ms; other load (cores busy with anything"
          " but the server and the load generator during the run).", ""]
    for name, runs in results.items():
        sc = SCENARIOS[name]
        if sc.kind != "load":
            continue
        for case in sc.cases:
            rs = [r for r in runs if r.case == case.key]
            cells = "; ".join("failed" if r.failed else
                              f"{r.rps:,.0f}, {r.cpu_us_per_req:.1f}, {r.p99_ms:.2f}, {r.other_load:.2f}" for r in rs)
            errs = sum(r.errors for r in rs)
            L.append(f"- {name}, {case.label}: {cells}" + (f" (**{errs} errors**)" if errs else ""))
    for name in ("idle-10k", "startup"):
        for r in results.get(name, []):
            if name == "idle-10k" and not r.failed:
                x = r.extra
                L.append(f"- idle-10k, {S[r.case].name}, round {r.round}: RSS {x['rss_before']:.1f} →"
                         f" {x['rss_with']:.1f} → {x['rss_after']:.1f} MB; idle_conns {json.dumps(x['idle_conns'])}")
    st = results.get("startup", [])
    for case in SCENARIOS["startup"].cases:
        rs = [r for r in st if r.case == case.key]
        if rs:
            L.append(f"- startup, {case.label} (Listening / answer ms): " + "; ".join(
                "failed" if r.failed else f"{_fmt(r.extra['listening_ms'], 0)} / {r.extra['answer_ms']:.0f}"
                for r in rs))
    path.write_text("\n".join(L) + "\n")


# --- chart (bench/.venv's python: matplotlib) ------------------------------------------------


def chart_data(results: Dict[str, List[Run]]) -> dict:
    data = {}
    for name, runs in results.items():
        sc = SCENARIOS[name]
        if sc.kind != "load":
            continue
        sums = summarise(sc, runs)
        half = name == "http-hello-half"
        data[name] = {
            "title": f"{name}: " + ("p99 ms at half peak (lower is better; log scale)" if half else f"median {sc.unit}"),
            "log": half,
            "bars": [(s.label, s.p99_ms if half else s.rps, s.ours) for s in sums.values() if not s.failed],
        }
    return data


def plot(data_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(data_path.read_text())
    panels = [v for v in data.values() if v["bars"]]
    if not panels:
        return
    heights = [0.6 + 0.32 * len(p["bars"]) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights) + 0.6 * len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, p in zip(axes[:, 0], panels):
        labels = [b[0] for b in p["bars"]][::-1]
        values = [b[1] for b in p["bars"]][::-1]
        colors = ["#d9534f" if b[2] else "#5b8db8" for b in p["bars"]][::-1]
        ax.barh(labels, values, color=colors)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.2f}", va="center", fontsize=8)
        ax.set_title(p["title"], fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        if p.get("log"):
            ax.set_xscale("log")
            ax.set_xlim(min(values) / 1.5, max(values) * 3)
        else:
            ax.set_xlim(0, max(values) * 1.18)
    fig.suptitle("baseplate-serve (red) and peers (blue): bench/RESULTS.md", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(png, dpi=100)


# --- main ---------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="default: all, in this order")
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--duration", default=os.environ.get("BENCH_DURATION", "10s"), help="each load run")
    parser.add_argument("--half-duration", default=os.environ.get("BENCH_HALF_DURATION"),
                        help="each http-hello-half run (default: 5s, or --duration if shorter)")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--png", type=Path, help="default: bench/results.png, or beside --results")
    parser.add_argument("--command", help="the reproduce command to record (default: this command line)")
    parser.add_argument("--plot", nargs=2, metavar=("DATA_JSON", "PNG"), help=argparse.SUPPRESS)
    parser.add_argument("--rewrite", action="store_true",
                        help="write the report again from the last run's bench/out/report.json (runs nothing;"
                        " picks up a changed bench/PROFILE.md)")
    args = parser.parse_args(argv)
    if args.plot:
        return plot(Path(args.plot[0]), Path(args.plot[1]))
    if args.rewrite:
        saved = json.loads((OUT / "report.json").read_text())
        runs = {k: [Run(**r) for r in v] for k, v in saved["results"].items()}
        if "granian" in saved:  # the thread settings granian-threads chose for http-hello
            S["granian"].name = saved["granian"]
        ns = argparse.Namespace(**saved["args"])
        path = Path(saved["path"])
        write_results(path, runs, saved["info"], ns, saved["command"],
                      Path(saved["png"]) if saved["png"] else None, saved["notes"])
        print(f"wrote {path}")
        return None
    args.half_duration = args.half_duration or ("5s" if seconds(args.duration) >= 5 else args.duration)
    duration, half_duration = seconds(args.duration), seconds(args.half_duration)  # validate early
    results_path = args.results.resolve()
    png = args.png or (BENCH / "results.png" if results_path == (BENCH / "RESULTS.md").resolve()
                       else results_path.with_suffix(".png"))

    # SIGTERM (or Ctrl-C) ends the bench through the finally blocks, which stop the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for exe in (OURS, PEER_PYTHON):
        if not exe.exists():
            sys.exit(f"{exe} is missing: run bench/run.sh (or `make install`) first")
    OUT.mkdir(exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # idle-10k: servers and idle_conns inherit it
    want = max(soft, min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 4 * IDLE_COUNT + 1024))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want) if hard != resource.RLIM_INFINITY else hard))
    except (ValueError, OSError):
        pass

    info = machine_info()
    info["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t_start = time.monotonic()
    bench = Bench(args.repeats, duration, half_duration)
    results: Dict[str, List[Run]] = {}
    names = args.scenario or list(SCENARIOS)
    names = [n for n in SCENARIOS if n in names]  # http-hello-half and soak use http-hello's peaks
    for name in names:
        sc = SCENARIOS[name]
        t = time.monotonic()
        print(f"scenario {name}: {len(sc.cases)} cases", flush=True)
        run = {"load": bench.run_load, "idle": bench.run_idle, "soak": bench.run_soak,
               "startup": bench.run_startup, "profile": bench.run_profile}[sc.kind]
        results[name] = run(sc)
        print(f"scenario {name}: {time.monotonic() - t:.0f} s", flush=True)
        # keep what is measured so far, should a later scenario crash
        (OUT / "runs.json").write_text(json.dumps({k: [asdict(r) for r in v] for k, v in results.items()}, indent=1))
    info["loadavg_after"] = open("/proc/loadavg").read().split(" ")[0]
    elapsed = time.monotonic() - t_start
    info["elapsed"] = f"{elapsed / 60:.0f} min" if elapsed > 120 else f"{elapsed:.0f} s"

    data_path = OUT / "chart.json"
    data_path.write_text(json.dumps(chart_data(results)))
    if PEER_PYTHON.exists():
        p = subprocess.run([str(PEER_PYTHON), str(Path(__file__).resolve()), "--plot", str(data_path), str(png)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            print(f"warning: no chart ({p.stderr.strip()[-300:]})", flush=True)

    command = args.command or " ".join(["python3", "bench/harness.py", *(argv if argv is not None else sys.argv[1:])])
    write_results(results_path, results, info, args, command, png, bench.notes)
    (OUT / "report.json").write_text(json.dumps({
        "results": {k: [asdict(r) for r in v] for k, v in results.items()}, "info": info, "command": command,
        "args": {"repeats": args.repeats, "duration": args.duration, "half_duration": args.half_duration},
        "path": str(results_path), "png": str(png) if png else "", "notes": bench.notes,
        "granian": S["granian"].name}, indent=1))
    print(f"wrote {results_path}" + (f" and {png}" if png.exists() else ""))
    print(results_path.read_text())


if __name__ == "__main__":
    main()
