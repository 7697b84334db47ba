#!/usr/bin/env python3
"""Where a request's CPU goes: instructions per request, per thread and per
function, counted by valgrind's callgrind (not timed, so the answer is the
same on a busy machine).

    python3 bench/profile.py [--dispatch gevent|threads|both|default|none] [--native-http] [--seconds 10] [--top 25]
                             [--ini PATH] [--option KEY=VALUE ...] [--load wrk|thrift:framed_binary|...]

For each dispatch mode it serves examples/hello under callgrind twice: a
short run (1 s of wrk) and a long one (--seconds). Start-up costs the same in
both, so the difference between the two runs, divided by the difference in
requests served, is the cost of one request. It prints that per thread
(the I/O thread, the thread that runs Python) and the functions with the
largest self cost. --ini serves another app (run from the INI's folder, e.g.
bench/configs/sleep10-gevent.ini with --app-dir bench/apps), --option adds
server options to its [server:main] (e.g. --option io_threads=0 for the
inline mode), --load thrift:KIND (a thrift_load kind, e.g. framed_binary) loads a Thrift app with bench/native's
thrift_load instead of wrk. Needs valgrind and wrk; uses the project's .venv and the
installed package (`make install`), or with --tree the in-place build of
`make dev` (which keeps its symbols). --native-http profiles the native
hello app as well (examples/native_http/build, built against the installed
SDK as bench/run.sh builds it).
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
HELLO = ROOT / "examples" / "hello"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV: Dict[str, str] = {}
NATIVE = Path(os.environ.get("BENCH_NATIVE_DIR", ROOT / "bench" / "native" / "build"))


def _ready(port: int, load: str) -> bool:
    if load.startswith("thrift:"):
        sys.path.insert(0, str(ROOT / "bench"))
        from harness import thrift_echo_ok  # noqa: E402

        return thrift_echo_ok(port, 5.0)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        return True
    except OSError:
        return False


def serve_under_callgrind(ini: Path, seconds: int, out: Path, cwd: Path = HELLO, load: str = "wrk") -> int:
    """Runs the server under callgrind with wrk (or thrift_load) for
    `seconds`; returns the number of requests completed. One callgrind file
    per thread."""
    port = free_port()
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
         str(PYTHON), "-m", "baseplate_serve", "--bind", f"127.0.0.1:{port}", str(ini)],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    try:
        deadline = time.monotonic() + 120
        while not _ready(port, load):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not come up under valgrind")
            time.sleep(0.3)
        if load.startswith("thrift:"):
            out_ = subprocess.run([str(NATIVE / "thrift_load"), "127.0.0.1", str(port), load[7:], "50",
                                   str(seconds), "0"], capture_output=True, text=True, check=True).stdout
            return int(re.search(r'"calls":\s*(\d+)', out_).group(1)) + 1
        wrk = subprocess.run(["wrk", "-t1", "-c50", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, check=True).stdout
        return int(re.search(r"(\d+) requests in", wrk).group(1)) + 1  # + the readiness probe
    finally:
        server.terminate()
        server.wait(120)


def thread_files(out: Path) -> Dict[int, Path]:
    return {int(p.name.rsplit("-", 1)[1]): p for p in out.parent.glob(out.name + "-*")}


def total(path: Path) -> int:
    m = re.search(r"^summary: (\d+)", path.read_text(errors="replace"), re.M)
    return int(m.group(1)) if m else 0


def self_costs(path: Path) -> Dict[str, int]:
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", str(path)],
                          capture_output=True, text=True, check=True).stdout
    costs: Dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in line:
            where = m.group(2).split(" [")[0]
            name = where.split(":", 1)[1] if ":" in where and not where.startswith("???") else where
            costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", ""))
    return costs


NATIVE_HTTP = ROOT / "examples" / "native_http" / "build" / "libhello_native.so"


def make_ini(dispatch: str, work: Path, base: Optional[Path], options: List[str]) -> Path:
    """The INI to serve: `base` (or examples/hello's app) with dispatch and
    `options` (KEY=VALUE) set in [server:main]."""
    text = base.read_text() if base else "[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = hello:make_app\n"
    settings = dict(o.split("=", 1) for o in options)
    if dispatch == "native-http":
        text = f"[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = {NATIVE_HTTP}:make_app\n"
    elif dispatch != "default":  # "default": the INI's own dispatch, or the server's default
        settings.setdefault("dispatch", dispatch)
    lines: List[str] = []
    in_server = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_server = stripped == "[server:main]"
            lines.append(line)
            if in_server:
                lines.extend(f"{k.strip()} = {v.strip()}" for k, v in settings.items())
            continue
        if in_server and "=" in stripped and stripped.split("=", 1)[0].strip() in settings:
            continue  # replaced above
        lines.append(line)
    ini = work / f"{dispatch}.ini"
    ini.write_text("\n".join(lines) + "\n")
    return ini


def profile(dispatch: str, seconds: int, top: int, work: Path, base: Optional[Path] = None,
            options: Sequence[str] = (), cwd: Path = HELLO, load: str = "wrk") -> None:
    ini = make_ini(dispatch, work, base, list(options))
    short, long_ = work / f"{dispatch}.short", work / f"{dispatch}.long"
    n_short = serve_under_callgrind(ini, 1, short, cwd, load)
    n_long = serve_under_callgrind(ini, seconds, long_, cwd, load)
    n = n_long - n_short
    fs, fl = thread_files(short), thread_files(long_)
    extra = " ".join(options)
    print(f"\n== {'app' if dispatch == 'native-http' else 'dispatch'} = {dispatch}{' ' + extra if extra else ''}"
          f"{' (' + str(base) + ')' if base else ''}: {n_long} - {n_short} = {n} requests")
    rows: List[Tuple[int, int]] = []
    for t in sorted(fl):
        per = (total(fl[t]) - (total(fs[t]) if t in fs else 0)) / n
        if per >= 100:
            rows.append((t, int(per)))
    # Threads are numbered in creation order: 1 is the main thread (the hub
    # in gevent mode); python worker threads come after the I/O threads.
    print("instructions per request, by thread (main = 1):")
    for t, per in rows:
        print(f"  thread {t:2d}: {per:7,d}")
    print(f"  all      : {sum(p for _, p in rows):7,d}")
    merged_s: Dict[str, int] = {}
    merged_l: Dict[str, int] = {}
    for t in fl:
        for k, v in self_costs(fl[t]).items():
            merged_l[k] = merged_l.get(k, 0) + v
        if t in fs:
            for k, v in self_costs(fs[t]).items():
                merged_s[k] = merged_s.get(k, 0) + v
    diffs = sorted(((merged_l.get(k, 0) - merged_s.get(k, 0)) / n, k) for k in merged_l)
    print(f"top {top} functions by self cost (instructions per request):")
    for per, k in reversed(diffs[-top:]):
        print(f"  {per:7,.0f}  {k[:140]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dispatch", choices=["gevent", "threads", "both", "default", "none"], default="both",
                        help="default: serve the INI as it is (its dispatch, or the server's default)")
    parser.add_argument("--native-http", action="store_true", help="also profile examples/native_http")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tree", action="store_true", help="profile the in-place build (make dev)")
    parser.add_argument("--ini", type=Path, help="serve this INI instead of examples/hello's app")
    parser.add_argument("--app-dir", type=Path, help="where the --ini's app module is (default: the INI's folder)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a [server:main] option, e.g. io_threads=0 (repeatable)")
    parser.add_argument("--load", default="wrk", help="wrk (HTTP), or thrift:KIND with a thrift_load kind, e.g. thrift:framed_binary")
    args = parser.parse_args()
    for o in args.option:
        if "=" not in o:
            parser.error(f"--option {o!r}: expected KEY=VALUE")
    base = args.ini.resolve() if args.ini else None
    cwd = (args.app_dir or (base.parent if base else HELLO)).resolve()
    if args.tree:
        ENV["PYTHONPATH"] = str(ROOT / "python")
    if not PYTHON.exists():
        sys.exit(f"{PYTHON} is missing: run `make install` first")
    modes = {"both": ["gevent", "threads"], "none": []}.get(args.dispatch, [args.dispatch])
    if args.native_http:
        if not NATIVE_HTTP.exists():
            sys.exit(f"{NATIVE_HTTP} is missing: build it as bench/run.sh does")
        modes.append("native-http")
    with tempfile.TemporaryDirectory() as tmp:
        for dispatch in modes:
            profile(dispatch, args.seconds, args.top, Path(tmp), base, args.option, cwd, args.load)


if __name__ == "__main__":
    main()
