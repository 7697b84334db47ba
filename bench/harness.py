#!/usr/bin/env python3
"""Benchmark harness: runs each server under wrk and writes bench/RESULTS.md.

Standard library only. bench/run.sh prepares the venvs and calls this; it can
also be run directly:

    python3 bench/harness.py [--scenario NAME ...] [--repeats N] [--duration 10s]

One measurement ("run"): start the server pinned to core 0, wait until it
answers, load it from core 1 with `wrk --latency` for a fixed duration, read
the server's CPU time before and after the load and its RSS after, then stop
it with SIGTERM. Every server runs in every round and rounds are interleaved
(A B C A B C ...), because this VM drifts between fast and slow states over
minutes; the table reports the median of the rounds. The machine is shared,
so each run waits for it to be idle first, and is redone if other work
took CPU during it.
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
import signal
import socket
import statistics
import subprocess
import sys
import time

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"  # raw per-run output (git-ignored)
OURS = ROOT / ".venv" / "bin" / "baseplate-serve"
PEER_PYTHON = BENCH / ".venv" / "bin" / "python"
HELLO = ROOT / "examples" / "hello"

SERVER_CPU = "0"  # the server gets core 0 ...
CLIENT_CPU = "1"  # ... and wrk core 1, so they never compete for a core
START_TIMEOUT = 30.0
QUIET_LOAD = 0.15  # cores busy with anything else: above this, wait before a run
QUIET_WAIT = float(os.environ.get("BENCH_QUIET_WAIT", "300"))  # seconds, per run
NOISY_LOAD = 0.25  # other load during a run above which the run is redone ...
ATTEMPTS = 3  # ... this many times at most (then the last one is kept)
STOP_TIMEOUT = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    command: Callable[[str], List[str]]  # "127.0.0.1:PORT" -> argv
    cwd: Path
    ours: bool = False


@dataclass
class Scenario:
    name: str
    title: str
    servers: List[Server]
    wrk_args: List[str]  # besides -d, --latency and the URL
    path: str = "/"


def _peer(*args: str) -> Callable[[str], List[str]]:
    return lambda bind: [str(PEER_PYTHON), str(BENCH / "peers" / "baseplate_wsgi.py"), "--bind", bind, *args]


SCENARIOS: Dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="http-hello",
            title="HTTP/1.1 keep-alive, WSGI hello world (examples/hello), 50 connections",
            wrk_args=["-t1", "-c50"],
            servers=[
                Server("baseplate-serve (ours)", lambda bind: [str(OURS), "--bind", bind, "hello.ini"], HELLO, True),
                Server("gevent pywsgi, as baseplate.py", _peer(), HELLO),
                Server("gevent pywsgi + TCP_NODELAY", _peer("--nodelay"), HELLO),
            ],
        ),
    ]
}


@dataclass
class Run:
    server: str
    round: int
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    rss_mb: float
    errors: int  # socket errors + non-2xx/3xx responses, as wrk counts them
    other_load: float  # cores busy with neither the server nor wrk during the run


# --- measuring a process -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process.

    /proc/<pid>/stat of a thread-group leader sums every thread of the
    process, including threads that already exited, so one read covers the
    server's event loop, its worker threads and the Python interpreter.
    """
    with open(f"/proc/{pid}/stat") as f:
        # comm (field 2) may contain spaces: split after its closing paren.
        fields = f.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


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
        time.sleep(1.0)
        load = machine_busy_seconds() - before
        if load <= QUIET_LOAD:
            return
        if time.monotonic() > deadline:
            print(f"  warning: machine still busy ({load:.2f} cores); running anyway", flush=True)
            return
        print(f"  machine busy ({load:.2f} cores); waiting", flush=True)
        time.sleep(4.0)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    # A fresh port per run: the peers bind with SO_REUSEPORT, so a stray
    # server left on a reused port would silently share the load.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, port: int, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before answering")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer within {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  warning: pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it", flush=True)
        proc.kill()
        proc.wait()


# --- wrk -----------------------------------------------------------------------------------

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


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)([smh]?)", duration)
    if not m:
        raise ValueError(f"bad duration {duration!r} (use e.g. 10s, 1m)")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --- one run, all runs -----------------------------------------------------------------------


def run_once(scenario: Scenario, server: Server, rnd: int, duration: str) -> Run:
    port = free_port()
    slug = re.sub(r"[^a-z0-9]+", "-", server.name.lower()).strip("-")
    log_path = OUT / f"{scenario.name}.{slug}.{rnd}"
    url = f"http://127.0.0.1:{port}{scenario.path}"
    with open(f"{log_path}.server.log", "w") as log:
        # taskset execs the server, so proc.pid is the server's own pid.
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *server.command(f"127.0.0.1:{port}")],
            cwd=server.cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(proc, port, scenario.path)
            cpu_before, busy_before = cpu_seconds(proc.pid), machine_busy_seconds()
            wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.monotonic()
            wrk = subprocess.run(
                ["taskset", "-c", CLIENT_CPU, "wrk", *scenario.wrk_args, f"-d{duration}", "--latency", url],
                capture_output=True,
                text=True,
                timeout=seconds(duration) + 60,
            )
            cpu_after, busy_after = cpu_seconds(proc.pid), machine_busy_seconds()
            wall = time.monotonic() - t0
            # The server is reaped only after this, so the children's rusage
            # delta is wrk's (and taskset's) alone.
            wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            wrk_cpu = sum(getattr(wrk_after, f) - getattr(wrk_before, f) for f in ("ru_utime", "ru_stime"))
            rss = rss_mb(proc.pid)
            Path(f"{log_path}.wrk.txt").write_text(wrk.stdout + wrk.stderr)
            if wrk.returncode != 0:
                raise RuntimeError(f"wrk failed ({wrk.returncode}): {wrk.stderr.strip()}")
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with status {proc.returncode} during the run")
        finally:
            stop(proc)
    w = parse_wrk(wrk.stdout)
    return Run(
        server=server.name,
        round=rnd,
        rps=w["rps"],
        requests=int(w["requests"]),
        p50_ms=w["p50_ms"],
        p99_ms=w["p99_ms"],
        cpu_us_per_req=(cpu_after - cpu_before) * 1e6 / max(w["requests"], 1),
        rss_mb=rss,
        errors=int(w["errors"]),
        other_load=max(0.0, busy_after - busy_before - (cpu_after - cpu_before) - wrk_cpu) / wall,
    )


def run_scenario(scenario: Scenario, repeats: int, duration: str) -> List[Run]:
    runs = []
    for rnd in range(1, repeats + 1):
        for server in scenario.servers:  # interleaved: every server once per round
            for attempt in range(1, ATTEMPTS + 1):
                wait_quiet()
                r = run_once(scenario, server, rnd, duration)
                if r.other_load <= NOISY_LOAD:
                    break
                verdict = "redoing it" if attempt < ATTEMPTS else "keeping it anyway"
                print(f"  {server.name}: {r.other_load:.2f} cores of other load during the run; {verdict}", flush=True)
            print(
                f"  [{scenario.name} round {rnd}/{repeats}] {server.name:32s} {r.rps:10.0f} req/s"
                f"  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  {r.cpu_us_per_req:6.1f} us CPU/req"
                f"  {r.rss_mb:5.1f} MB  other load {r.other_load:.2f}" + (f"  {r.errors} errors" if r.errors else ""),
                flush=True,
            )
            runs.append(r)
    return runs


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
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "kernel": platform.release(),
        "os": _sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "gevent": _sh([str(PEER_PYTHON), "-c", "import gevent; print(gevent.__version__)"]),
        "wrk": _sh(["sh", "-c", "wrk -v 2>&1 | head -1"]).split(" Copyright")[0],
        "commit": commit,
        "loadavg": open("/proc/loadavg").read().split(" ")[0],
    }


def median_of(runs: List[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def write_results(
    path: Path, results: Dict[str, List[Run]], info: Dict[str, str], args: argparse.Namespace, command: str
) -> None:
    lines = [
        "# Benchmark results",
        "",
        "Written by bench/harness.py; see bench/README.md for what is measured and how.",
        "",
        f"- Date: {info['date']}",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}; {info['os']}, Linux {info['kernel']}",
        f"- Load average (1 min) before / after: {info['loadavg']} / {info['loadavg_after']}",
        f"- Software: Python {info['python']}, gevent {info['gevent']}, {info['wrk']}; commit {info['commit']}",
        f"- Server pinned to core {SERVER_CPU}, wrk to core {CLIENT_CPU};"
        f" {args.repeats} interleaved rounds of {args.duration} per server; medians shown",
        f"- Reproduce: `{command}`",
        "",
        "| scenario | server | req/s | p50 ms | p99 ms | server CPU µs/req | RSS MB"
        " | ours ÷ this, req/s | this ÷ ours, CPU/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        scenario = SCENARIOS[name]
        by_server = {s.name: [r for r in runs if r.server == s.name] for s in scenario.servers}
        ours = next(s.name for s in scenario.servers if s.ours)
        ours_rps, ours_cpu = median_of(by_server[ours], "rps"), median_of(by_server[ours], "cpu_us_per_req")
        for server, rs in by_server.items():
            rps, cpu = median_of(rs, "rps"), median_of(rs, "cpu_us_per_req")
            ratios = "—  | — " if server == ours else f"{ours_rps / rps:.2f}× | {cpu / ours_cpu:.2f}×"
            lines.append(
                f"| {name} | {server} | {rps:,.0f} | {median_of(rs, 'p50_ms'):.2f} | {median_of(rs, 'p99_ms'):.2f}"
                f" | {cpu:.1f} | {median_of(rs, 'rss_mb'):.1f} | {ratios} |"
            )
    lines += ["", "Scenarios:", ""]
    for name in results:
        s = SCENARIOS[name]
        lines.append(f"- `{name}`: {s.title}; `wrk {' '.join(s.wrk_args)} -d{args.duration} --latency`")
    lines += [
        "",
        "Every run, in the order run (req/s; server CPU µs/req; other load: cores busy with"
        " anything but the server and wrk during the run):",
        "",
    ]
    for name, runs in results.items():
        for server in SCENARIOS[name].servers:
            rs = [r for r in runs if r.server == server.name]
            cells = ", ".join(f"{r.rps:,.0f}; {r.cpu_us_per_req:.1f}; {r.other_load:.2f}" for r in rs)
            errs = sum(r.errors for r in rs)
            lines.append(f"- {name}, {server.name}: {cells}" + (f" (**{errs} wrk errors**)" if errs else ""))
    path.write_text("\n".join(lines) + "\n")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", "3")))
    parser.add_argument("--duration", default=os.environ.get("BENCH_DURATION", "10s"), help="wrk -d")
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--command", help="the reproduce command to record (default: this command line)")
    args = parser.parse_args(argv)
    seconds(args.duration)  # validate early

    for exe in (OURS, PEER_PYTHON):
        if not exe.exists():
            sys.exit(f"{exe} is missing: run bench/run.sh (or `make install`) first")
    OUT.mkdir(exist_ok=True)

    info = machine_info()
    info["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    results: Dict[str, List[Run]] = {}
    for name in args.scenario or list(SCENARIOS):
        print(f"scenario {name}: {args.repeats} rounds x {len(SCENARIOS[name].servers)} servers x {args.duration}")
        results[name] = run_scenario(SCENARIOS[name], args.repeats, args.duration)
    info["loadavg_after"] = open("/proc/loadavg").read().split(" ")[0]

    command = args.command or " ".join(["python3", "bench/harness.py", *(argv if argv is not None else sys.argv[1:])])
    write_results(args.results, results, info, args, command)
    (OUT / "runs.json").write_text(json.dumps({k: [vars(r) for r in v] for k, v in results.items()}, indent=1))
    print(f"wrote {args.results.relative_to(ROOT) if args.results.is_relative_to(ROOT) else args.results}")
    print(args.results.read_text())


if __name__ == "__main__":
    main()
