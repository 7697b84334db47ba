"""Log lines as baseplate.py 2.7 writes them: JSON with its field names when
stdin is not a TTY, text on a TTY, and ``[loggers]`` over both."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import textwrap

from pathlib import Path

import pytest

from conftest import free_port, server_command
from test_native import build
from test_thrift import echo_server  # noqa: F401  (a fixture)

AUTO = {"BASEPLATE_SERVE_LOG_FORMAT": "auto"}

APP = """
import logging

log = logging.getLogger("testapp")


def make_app(app_config):
    def app(environ, start_response):
        log.info("handling %s", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return app
"""

#: What baseplate.py 2.7's CustomJsonFormatter writes for every record.
BASEPLATE_FIELDS = {
    "level", "message", "funcName", "lineno", "module", "name", "pathname",
    "process", "processName", "thread", "threadName",
    "otelTraceID", "otelSpanID", "otelTraceSampled", "otelServiceName",
}  # fmt: skip

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def get(port: int, path: str, headers=None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        assert conn.getresponse().read() is not None
    finally:
        conn.close()


def json_lines(text: str) -> list:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line parses
    for record in records:
        assert BASEPLATE_FIELDS <= set(record), record
        assert "levelname" not in record and "trace_id" not in record
    return records


def one(records: list, **match) -> dict:
    found = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, records)
    return found[0]


def test_json_lines_when_stdin_is_not_a_tty(run_server):
    server = run_server(APP, server_options="access_log = true\n", env=AUTO)
    get(server.port, "/b3", {"X-Trace": "1234", "X-Span": "99"})
    get(server.port, "/w3c", {"traceparent": TRACEPARENT})
    get(server.port, "/none")
    server.stop()
    records = json_lines(server.stdout)
    # Ours, outside a request.
    listening = one(records, name="baseplate_serve", level="INFO", message=f"Listening on 127.0.0.1:{server.port}")
    assert listening["otelTraceID"] == "0" and "traceID" not in listening
    # The app's, with the request's ids in OTel's form (X-Trace is a decimal number).
    b3 = one(records, name="testapp", message="handling /b3")
    assert (b3["otelTraceID"], b3["otelSpanID"], b3["traceID"]) == ("%032x" % 1234, "%016x" % 99, "%032x" % 1234)
    w3c = one(records, name="testapp", message="handling /w3c")
    assert (w3c["otelTraceID"], w3c["otelSpanID"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert one(records, name="testapp", message="handling /none")["otelTraceID"] == "0"
    # The core's (native records), with the request's trace id.
    access = [r for r in records if r["name"] == "baseplate_serve.access"]
    assert [r["otelTraceID"] for r in access] == ["%032x" % 1234, "4bf92f3577b34da6a3ce929d0e0e4736", "0"]
    assert {(r["pathname"], r["module"], r["funcName"], r["lineno"]) for r in access} == {("<native>", "<native>", "", 0)}


def test_native_app_records_are_json_too(run_server, tmp_path_factory):
    lib = build("native_http", tmp_path_factory.mktemp("native_json"))
    ini = f"[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = {lib}:make_app\ngreeting = Hi\n"
    server = run_server(ini=ini, env=AUTO)
    get(server.port, "/log", {"X-Trace": "777"})
    server.stop()
    record = one(json_lines(server.stdout), message="native app handled /log")
    assert record["otelTraceID"] == "%032x" % 777


def test_text_on_a_tty(tmp_path):
    """Under script(1), stdin is a terminal: text lines, as baseplate.py."""
    if not shutil.which("script"):
        pytest.skip("script(1) is not installed")
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app.ini").write_text("[server:main]\nfactory = baseplate.server.wsgi\n[app:main]\nfactory = app:make_app\n")
    port = free_port()
    command = " ".join([*server_command(), "--bind", f"127.0.0.1:{port}", "app.ini"])
    # The server stops itself: a bad --bind would hang, so bound the run.
    shell = f"timeout -s TERM 3 {command}"
    done = subprocess.run(
        ["script", "-qec", shell, "/dev/null"],
        cwd=tmp_path,
        env=dict(os.environ, **AUTO),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert any(f"INFO [" in line and f"Listening on 127.0.0.1:{port}" in line for line in lines), done.stdout
    assert not any(line.lstrip().startswith("{") for line in lines), done.stdout


def test_loggers_section_overrides_the_json_default(run_server):
    ini = textwrap.dedent(
        """
        [server:main]
        factory = baseplate.server.wsgi

        [app:main]
        factory = app:make_app

        [loggers]
        keys = root

        [handlers]
        keys = out

        [formatters]
        keys = plain

        [logger_root]
        level = INFO
        handlers = out

        [handler_out]
        class = StreamHandler
        args = (sys.stdout,)
        formatter = plain

        [formatter_plain]
        format = PLAIN %(levelname)s %(name)s %(message)s
        """
    )
    server = run_server(APP, ini=ini, env=AUTO)
    get(server.port, "/x")
    server.stop()
    lines = [line for line in server.stdout.splitlines() if line.strip()]
    assert "PLAIN INFO testapp handling /x" in lines, server.stdout
    assert all(line.startswith("PLAIN ") for line in lines), server.stdout


@pytest.mark.parametrize("value,expect", [("json", "{"), ("text", "20"), ("bogus", None)])
def test_the_format_can_be_forced(run_server, value, expect):
    server = run_server(APP, env={"BASEPLATE_SERVE_LOG_FORMAT": value}, wait=expect is not None)
    if expect is None:
        assert server.wait() == 2
        assert "BASEPLATE_SERVE_LOG_FORMAT='bogus'" in server.stderr
        return
    server.stop()
    assert server.stdout.startswith(expect), server.stdout


# Trace id precedence: that of baseplate.py 2.7's propagators (docs/logging.md).

BOTH_APP = """
import baseplate_serve


def make_app(app_config):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [baseplate_serve.current_trace_id().encode()]
    return app
"""


def test_traceparent_wins_over_x_trace(run_server):
    server = run_server(BOTH_APP, server_options="access_log = true\n")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/", headers={"X-Trace": "1234", "X-Span": "5", "traceparent": TRACEPARENT})
    assert conn.getresponse().read() == b"4bf92f3577b34da6a3ce929d0e0e4736"
    conn.request("GET", "/", headers={"X-Trace": "1234", "traceparent": "00-not-valid"})
    assert conn.getresponse().read() == b"1234"
    conn.close()
    server.stop()
    assert '[4bf92f3577b34da6a3ce929d0e0e4736] baseplate_serve.access: 127.0.0.1 "GET /"' in server.stdout


def test_thrift_traceparent_wins_over_trace(echo_server):
    from test_thrift import Client

    server = echo_server("access_log = true\n")
    with Client(server.port, "header_binary") as c:
        c.trans.set_header(b"Trace", b"1234")
        c.trans.set_header(b"traceparent", TRACEPARENT.encode())
        assert c.echo.echo("x") == "x"
        c.trans.set_header(b"Trace", b"1234")
        assert c.echo.echo("y") == "y"
    server.stop()
    access = [line for line in server.stdout.splitlines() if "baseplate_serve.access" in line]
    assert len(access) == 2, server.stdout
    assert "[4bf92f3577b34da6a3ce929d0e0e4736]" in access[0] and "[1234]" in access[1], access
