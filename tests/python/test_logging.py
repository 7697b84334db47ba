"""One logging stream: trace ids in Python and native records, --debug,
the INI file's own logging setup, and the access log."""
from __future__ import annotations

import concurrent.futures
import http.client
import re
import shutil
import textwrap
import time

from pathlib import Path

import pytest

APP = """
import logging
import gevent

import baseplate_serve

log = logging.getLogger("testapp")


def make_app(app_config):
    def app(environ, start_response):
        gevent.sleep(0.05)  # let concurrent requests interleave
        log.info("handling %s trace=%s", environ["PATH_INFO"], baseplate_serve.current_trace_id())
        log.debug("debug detail for %s", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [baseplate_serve.current_trace_id().encode()]
    return app
"""


def get(port: int, path: str, headers=None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def test_trace_ids_from_x_trace_and_traceparent(run_server):
    server = run_server(APP)
    assert get(server.port, "/a", {"X-Trace": "1234", "X-Span": "77"}) == b"1234"
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert get(server.port, "/b", {"traceparent": tp}) == b"4bf92f3577b34da6a3ce929d0e0e4736"
    assert get(server.port, "/c") == b"-"
    assert get(server.port, "/d", {"traceparent": "garbage"}) == b"-"
    server.stop()
    out = server.stdout
    assert re.search(r"INFO \[\d+\] \[1234\] testapp: handling /a trace=1234", out), out
    assert re.search(r"\[4bf92f3577b34da6a3ce929d0e0e4736\] testapp: handling /b", out), out
    assert re.search(r"INFO \[\d+\] \[-\] testapp: handling /c trace=-", out), out
    assert re.search(r"INFO \[\d+\] \[-\] baseplate_serve: Listening on", out), out


@pytest.mark.parametrize("dispatch", ["gevent", "threads"])
def test_concurrent_requests_keep_their_own_trace_id(run_server, dispatch):
    app = APP if dispatch == "gevent" else APP.replace("gevent.sleep(0.05)", "__import__('time').sleep(0.05)")
    server = run_server(app, server_options=f"dispatch = {dispatch}\n")
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        bodies = list(pool.map(lambda i: get(server.port, f"/r{i}", {"X-Trace": f"t{i}"}), range(40)))
    assert bodies == [f"t{i}".encode() for i in range(40)]
    server.stop()
    for i in range(40):
        assert re.search(rf"\[t{i}\] testapp: handling /r{i} trace=t{i}\n", server.stdout), i


def test_debug_flag_enables_python_and_native_debug_records(run_server):
    quiet = run_server(APP)
    get(quiet.port, "/x")
    # A request the core rejects: logged by the native core at DEBUG.
    conn = http.client.HTTPConnection("127.0.0.1", quiet.port, timeout=10)
    conn.putrequest("GET", "/", skip_host=True)
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    quiet.stop()
    assert "debug detail" not in quiet.stdout
    assert "rejected request" not in quiet.stdout

    loud = run_server(APP, args=["--debug"])
    get(loud.port, "/x")
    conn = http.client.HTTPConnection("127.0.0.1", loud.port, timeout=10)
    conn.putrequest("GET", "/", skip_host=True)
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()
    loud.stop()
    assert re.search(r"DEBUG \[\d+\] \[-\] testapp: debug detail for /x", loud.stdout), loud.stdout
    assert re.search(r"DEBUG \[\d+\] \[-\] baseplate_serve\.http: rejected request", loud.stdout), loud.stdout


def test_access_log_is_off_by_default_and_native(run_server):
    server = run_server(APP)
    get(server.port, "/quiet")
    server.stop()
    assert "baseplate_serve.access" not in server.stdout

    server = run_server(APP, server_options="access_log = true\n")
    get(server.port, "/loud?q=1", {"X-Trace": "abc"})
    server.stop()
    assert re.search(
        r'INFO \[\d+\] \[abc\] baseplate_serve\.access: 127\.0\.0\.1 "GET /loud\?q=1" 200 3 \d+\.\d+ms', server.stdout
    ), server.stdout


FILECONFIG = """
[server:main]
factory = baseplate.server.wsgi
access_log = true

[app:main]
factory = app:make_app

[loggers]
keys = root

[handlers]
keys = file

[formatters]
keys = custom

[logger_root]
level = INFO
handlers = file

[handler_file]
class = FileHandler
args = ('{path}', 'a')
formatter = custom

[formatter_custom]
format = CUSTOM|%(levelname)s|%(trace_id)s|%(name)s|%(message)s
"""


def test_ini_logging_section_routes_python_and_native_records(run_server, tmp_path):
    log_file = tmp_path / "server.log"
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    server = run_server(ini=FILECONFIG.format(path=log_file), wait=False)
    deadline = time.monotonic() + 30
    while "Listening on" not in (log_file.read_text() if log_file.exists() else ""):
        assert time.monotonic() < deadline and server.proc.poll() is None, server.stderr
        time.sleep(0.05)
    get(server.port, "/routed", {"X-Trace": "zz9"})
    assert server.stop() == 0
    text = log_file.read_text()
    assert "CUSTOM|INFO|-|baseplate_serve|Listening on 127.0.0.1:" in text, text
    assert "CUSTOM|INFO|zz9|testapp|handling /routed trace=zz9" in text, text
    # a native record (the core's access log) through the same Python handler
    assert re.search(r'CUSTOM\|INFO\|zz9\|baseplate_serve\.access\|127\.0\.0\.1 "GET /routed" 200', text), text
    assert "Listening on" not in server.stdout


THRIFT_APP = """
import logging, os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from echo import Echo
import baseplate_serve

log = logging.getLogger("thriftapp")


class Handler:
    def echo(self, message):
        log.info("echo %s trace=%s", message, baseplate_serve.current_trace_id())
        return message


def make_processor(app_config):
    return Echo.Processor(Handler())
"""


def test_trace_id_from_thrift_headers(run_server, tmp_path):
    example = Path(__file__).resolve().parents[2] / "examples" / "thrift_echo"
    shutil.copytree(example / "gen", tmp_path / "gen")
    (tmp_path / "app.py").write_text(textwrap.dedent(THRIFT_APP))
    ini = "[server:main]\nfactory = baseplate.server.thrift\n\n[app:main]\nfactory = app:make_processor\n"
    server = run_server(ini=ini)
    import sys

    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        from echo import Echo
        from thrift.protocol import THeaderProtocol
        from thrift.transport import TSocket

        prot = THeaderProtocol.THeaderProtocol(TSocket.TSocket("127.0.0.1", server.port), allowed_client_types=[0])
        prot.trans.open()
        try:
            prot.trans.set_header(b"Trace", b"9876")
            assert Echo.Client(prot).echo("hi") == "hi"
        finally:
            prot.trans.close()
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        for name in [m for m in sys.modules if m == "echo" or m.startswith("echo.")]:
            del sys.modules[name]
    server.stop()
    assert re.search(r"INFO \[\d+\] \[9876\] thriftapp: echo hi trace=9876", server.stdout), server.stdout
