"""End to end beside reddit's baseplate.py 2.7.1 (marker ``compat``).

One throwaway venv gets baseplate==2.7.1 with what its Pyramid and Thrift
frameworks need (tests/python/compat/requirements.txt, pinned) and this
package's wheel. Under this server: a Pyramid service (BaseplateConfigurator)
calls a Thrift service (baseplateify_processor) through
baseplate.clients.thrift.ThriftClient; checked are the trace chain (headers
the Thrift handler receives, log lines of both services, spans at an OTLP
collector), JSON logs, the Prometheus exporter, baseplate-healthcheck,
SERVER_STATE during the drain, and ``pip uninstall`` in both orders.

Needs the package index (pip); about a minute and a half, most of it
installing. ``BPS_COMPAT_WHEEL=path/to/baseplate_serve-*.whl`` reuses a wheel
instead of building one from the tree (``pip wheel``, incremental through
build/). The tests run in file order and share the venv; the uninstall test
comes last.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import venv

from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from conftest import SANITIZED_CORE, Server, fast_stop, free_port

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(bool(SANITIZED_CORE), reason="packaging beside baseplate.py; the venv has its own core"),
]

REPO = Path(__file__).resolve().parents[2]
COMPAT = Path(__file__).resolve().parent / "compat"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
#: What baseplate.py 2.7 writes in every JSON log line.
JSON_FIELDS = {"level", "message", "name", "otelTraceID", "otelSpanID", "otelTraceSampled", "threadName"}


class Venv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        self.python = str(self.bin / "python")
        self.wheel: Path = Path()

    def env(self, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            list(args), env=self.env(), cwd=self.root, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def pip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.python, "-m", "pip", "--disable-pip-version-check", *args, check=check)

    def python_c(self, code: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.python, "-c", code, check=check)


@pytest.fixture(scope="module")
def compat_venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("compat")
    env = Venv(root)
    venv.EnvBuilder(with_pip=True, symlinks=True).create(root / "venv")
    env.pip("install", "-q", "--no-deps", "-r", str(COMPAT / "requirements.txt"))
    prebuilt = os.environ.get("BPS_COMPAT_WHEEL")
    if prebuilt:
        env.wheel = Path(prebuilt)
    else:
        wheels = root / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        (env.wheel,) = wheels.glob("baseplate_serve-*.whl")
    env.pip("install", "-q", "--no-deps", str(env.wheel))  # after baseplate.py: ours owns the command
    for name in ("pyramid_service.py", "thrift_service.py", "shim_service.py"):
        shutil.copyfile(COMPAT / name, root / name)
    return env


class Collector:
    """An OTLP collector for the services' spans (without one, the exporter
    retries for a minute at exit, as under baseplate.py). A thread reads the
    spans it prints (select() on a buffered pipe would miss lines)."""

    def __init__(self, python: str, env: Dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [python, str(COMPAT / "collector.py")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.spans: List[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.spans.append(json.loads(line))  # list.append is atomic

    def spans_until(self, trace_ids: set, per_trace: int, timeout: float = 30.0) -> Dict[str, List[str]]:
        """Span names by trace id, once each of ``trace_ids`` has ``per_trace``
        spans (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            names: Dict[str, List[str]] = {}
            for span in list(self.spans):
                names.setdefault(span["trace_id"], []).append(span["name"])
            if all(len(names.get(t, [])) >= per_trace for t in trace_ids) or time.monotonic() > deadline:
                return names
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        self.proc.stdout.close()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def collector(compat_venv: Venv) -> Iterator[Collector]:
    collector = Collector(compat_venv.python, compat_venv.env())
    yield collector
    collector.close()


def start(
    env: Venv, collector: Collector, ini: str, text: str, command: Optional[List[str]] = None, **extra: str
) -> Server:
    (env.root / ini).write_text(fast_stop(text))
    port = free_port()
    server = Server(
        ["--bind", f"127.0.0.1:{port}", ini],
        env.root,
        env.env(
            BASEPLATE_SERVE_LOG_FORMAT="auto",  # stdin is /dev/null: JSON, as baseplate.py
            BASEPLATE_SERVE_PROMETHEUS_ENDPOINT=f"127.0.0.1:{free_port()}",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{collector.port}",
            OTEL_EXPORTER_OTLP_TRACES_INSECURE="true",
            OTEL_BSP_SCHEDULE_DELAY="100",
            **extra,
        ),
        port,
        command=command or [str(env.bin / "baseplate-serve")],
    )
    return server.wait_listening()


# The Thrift service runs in threads dispatch, the Pyramid one in gevent
# (the default): baseplate.py's hooks (the exporter's hub, above all) in both.
THRIFT_INI = """
[server:main]
factory = baseplate.server.thrift
access_log = true
dispatch = threads

[app:main]
factory = thrift_service:make_processor
"""

PYRAMID_INI = """
[server:main]
factory = baseplate.server.wsgi
access_log = true
drain_time = {drain}

[app:main]
factory = pyramid_service:make_wsgi_app
greeting = hello
downstream.endpoint = 127.0.0.1:{thrift_port}
"""


@pytest.fixture(scope="module")
def services(compat_venv: Venv, collector: Collector) -> Iterator[Dict[str, Server]]:
    thrift = start(compat_venv, collector, "thrift.ini", THRIFT_INI)
    pyramid = start(compat_venv, collector, "pyramid.ini", PYRAMID_INI.format(drain="0", thrift_port=thrift.port))
    yield {"thrift": thrift, "pyramid": pyramid}
    for server in (pyramid, thrift):
        server.kill()


def get(port: int, path: str, headers=None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body)
        return body
    finally:
        conn.close()


def json_records(server: Server) -> List[dict]:
    records = [json.loads(line) for line in server.stdout.splitlines() if line.strip()]
    for record in records:
        assert JSON_FIELDS <= set(record), record
    return records


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout}s")


def test_only_the_command_is_in_common(compat_venv: Venv) -> None:
    shown = compat_venv.pip("show", "-f", "baseplate", "baseplate-serve").stdout
    files: Dict[str, set] = {}
    name = ""
    for line in shown.splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
            files[name] = set()
        elif line.startswith("  ") and name:
            files[name].add(line.strip())
    assert set(files) == {"baseplate", "baseplate-serve"}, shown
    common = files["baseplate"] & files["baseplate-serve"]
    assert {Path(p).name for p in common} == {"baseplate-serve"} and all("bin/" in p for p in common), common


def test_trace_chain_through_thrift_client(services: Dict[str, Server], collector: Collector) -> None:
    pyramid, thrift = services["pyramid"], services["thrift"]
    assert json.loads(get(pyramid.port, "/call", {"traceparent": TRACEPARENT})) == {"ok": True}
    assert json.loads(get(pyramid.port, "/call", {"X-Trace": "1234", "X-Span": "77", "X-Sampled": "1"})) == {
        "ok": True
    }

    def lines(server: Server, name: str) -> List[dict]:
        return [r for r in json_records(server) if r["name"] == name]

    wait_for(
        lambda: len(lines(thrift, "baseplate_serve.access")) >= 2 and len(lines(pyramid, "baseplate_serve.access")) >= 2,
        "access log lines of both services",
    )
    # The Thrift handler received THeader Trace and traceparent with the
    # caller's trace id, and the Thrift service's lines carry it: the app's
    # (inside its span) and the core's access log.
    calls = lines(thrift, "thrift_service")
    assert len(calls) == 2, calls
    for record, trace in zip(calls, (int(W3C_TRACE, 16), 1234)):
        fields = dict(part.split("=", 1) for part in record["message"][len("thrift call ") :].split())
        assert int(fields["Trace"]) == trace, record
        assert fields["traceparent"].split("-")[1] == "%032x" % trace, record
        assert record["otelTraceID"] == "%032x" % trace, record
    expected = [W3C_TRACE, "%032x" % 1234]
    assert [r["otelTraceID"] for r in lines(thrift, "baseplate_serve.access")] == expected
    # The Pyramid service's lines, the same way.
    assert [r["otelTraceID"] for r in lines(pyramid, "pyramid_service")] == expected
    assert [r["otelTraceID"] for r in lines(pyramid, "baseplate_serve.access")] == expected

    # Both services exported the spans of each trace (configure_tracing()):
    # the Pyramid server span, its ThriftClient span, the Thrift server span.
    exported = collector.spans_until(set(expected), per_trace=3)
    assert set(exported) == set(expected), exported
    for trace in expected:
        assert len(exported[trace]) == 3 and {"/call", "downstream/is_healthy"} < set(exported[trace]), exported


def metrics(server: Server) -> str:
    records = json_records(server)
    (line,) = [r["message"] for r in records if r["message"].startswith("Prometheus metrics exported on server")]
    address = line.split("listening on ", 1)[1].rsplit("/metrics", 1)[0]
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 200
    # PROMETHEUS_MULTIPROC_DIR was not set: a warning, not baseplate.py's exit 1.
    assert any(r["level"] == "WARNING" and "PROMETHEUS_MULTIPROC_DIR is not set" in r["message"] for r in records)
    return body


def test_prometheus_exporter(services: Dict[str, Server]) -> None:
    get(services["pyramid"].port, "/health")
    body = metrics(services["pyramid"])  # gevent dispatch
    assert 'http_server_requests_total{http_endpoint="/health"' in body, body[:2000]
    assert "thrift_server_" in metrics(services["thrift"])  # threads dispatch


def test_baseplate_healthcheck(compat_venv: Venv, services: Dict[str, Server]) -> None:
    for kind, server in (("wsgi", services["pyramid"]), ("thrift", services["thrift"])):
        done = compat_venv.run(str(compat_venv.bin / "baseplate-healthcheck"), kind, f"127.0.0.1:{server.port}")
        assert done.stdout.strip() == "OK!", (kind, done.stdout, done.stderr)


def test_blocked_hub_is_reported(compat_venv: Venv, collector: Collector, services: Dict[str, Server]) -> None:
    # baseplate.py's option in [server:main]: its runtime monitor would watch
    # the hub from inside; the core's monitor watches it from a thread.
    ini = PYRAMID_INI.format(drain="0", thrift_port=services["thrift"].port).replace(
        "drain_time = 0", "drain_time = 0\nmonitoring.blocked_hub = 200 milliseconds"
    )
    server = start(compat_venv, collector, "blocked.ini", ini)
    try:
        assert json.loads(get(server.port, "/spin?seconds=1.5")) == {"spun": True}
        record = wait_for(
            lambda: next((r for r in json_records(server) if r["level"] == "WARNING" and "spin_the_hub" in r["message"]), None),
            "blocked-hub WARNING naming the spinning view",
        )
        assert "hub" in record["message"].lower(), record
    finally:
        server.kill()


def test_server_state_during_the_drain(
    compat_venv: Venv, collector: Collector, services: Dict[str, Server]
) -> None:
    thrift_port = services["thrift"].port
    server = start(compat_venv, collector, "drain.ini", PYRAMID_INI.format(drain="3 seconds", thrift_port=thrift_port))
    try:
        assert json.loads(get(server.port, "/state")) == {"state": "RUNNING"}
        server.send()
        server.wait_for_output(r"Draining for")
        assert json.loads(get(server.port, "/state")) == {"state": "SHUTTING_DOWN"}
        assert server.wait() == 0
    finally:
        server.kill()


def test_pip_uninstall_either_leaves_the_other_working(compat_venv: Venv, collector: Collector) -> None:
    command = compat_venv.bin / "baseplate-serve"
    # baseplate-serve first: baseplate.py's package is whole.
    compat_venv.pip("uninstall", "-y", "-q", "baseplate-serve")
    done = compat_venv.python_c("from baseplate import Baseplate; from baseplate.lib import config; print(config.__file__)")
    assert done.stdout.strip().endswith("site-packages/baseplate/lib/config.py"), done.stdout
    # The one shared path went with it: both RECORDs list bin/baseplate-serve
    # (docs/migrating.md, "Rolling back": reinstall baseplate.py for its command).
    assert not command.exists()

    # Ours again, then baseplate.py first: the shim takes over.
    compat_venv.pip("install", "-q", "--no-deps", str(compat_venv.wheel))
    compat_venv.pip("uninstall", "-y", "-q", "baseplate")
    done = compat_venv.python_c(
        "from baseplate.lib import config; print(config.__spec__.origin);"
        " from baseplate import config; print(config.__spec__.origin)"
    )
    assert done.stdout.splitlines() == ["baseplate-serve shim"] * 2, done.stdout
    app = "[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = shim_service:make_app\ngreeting = still here\n"
    assert not command.exists()  # as above; python -m baseplate_serve is always this server
    server = start(compat_venv, collector, "shim.ini", app, command=[compat_venv.python, "-m", "baseplate_serve"])
    try:
        assert get(server.port, "/") == b"still here"
        assert "baseplate.py" not in server.stdout  # no start-up hooks without it
    finally:
        server.kill()
    done = compat_venv.run(compat_venv.python, "-m", "baseplate_serve", "--version")
    assert done.stdout.startswith("baseplate-serve "), done.stdout
