"""The server options table (cpp/core/options.hpp): the docs match it, every
value is range-checked with one error line, unknown options warn, and the
stop defaults are baseplate.py 2.7's."""
from __future__ import annotations

import re
import signal
import time

from pathlib import Path

import pytest

from baseplate_serve import _core, _options
from test_cli_config import GOOD_INI, HELLO_APP, assert_one_error_line, bind_args, run_cli
from test_graceful_stop import APP as SLOW_APP, Request

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
TABLE = {row["key"]: row for row in _core.SERVER_OPTIONS}


def ini_with(options: str, factory: str = "baseplate.server.wsgi") -> str:
    return GOOD_INI.replace("factory = baseplate.server.wsgi\n", f"factory = {factory}\n{options}")


# --------------------------------------------------------------------------- the table


def test_docs_list_every_option_with_its_default_and_range():
    docs = DOCS.read_text()
    assert _options.markdown_table() in docs, "docs/configuration.md: regenerate with python -m baseplate_serve._options"
    for key, row in TABLE.items():
        assert f"| `{key}` | `{_options.default_text(row)}` |" in docs


def test_table_holds_baseplate_py_stop_defaults():
    assert TABLE["stop_timeout"]["default"] == 10_000 and TABLE["stop_timeout"]["kind"] == "timespan"
    assert TABLE["drain_time"]["default"] == 5_000 and TABLE["drain_time"]["user"] == "python"
    assert TABLE["monitoring.blocked_hub"]["default"] == 1_000


def test_core_takes_exactly_the_core_rows():
    core_keys = {k for k, row in TABLE.items() if row["user"] == "core"}
    parsed = _options.parse_server_options({}, "app.ini", "server:main")
    assert set(parsed.core) == core_keys
    _core.Server(parsed.core, "wsgi", "threads")  # every default accepted
    # A key the core does not read is an error, not dropped: a typo, the old
    # "_ms" names, a Python-side option.
    for key in ("io_thread", "stop_timeout_ms", "python_threads", "drain_time"):
        with pytest.raises(ValueError, match=re.escape(key)):
            _core.Server({key: 1}, "wsgi", "threads")
    with pytest.raises(IndexError, match="io_threads"):
        _core.Server({"io_threads": 100_000}, "wsgi", "threads")


def test_body_preread_reaches_the_core():
    """It was read by the core but never sent: now it is a row like the others."""
    parsed = _options.parse_server_options({"body_preread": "0"}, "app.ini", "server:main")
    assert parsed.core["body_preread"] == 0


# --------------------------------------------------------------------------- range checks

#: Values no option accepts, whatever its kind.
NOT_A_VALUE = "lots"


def _too_big(row: dict) -> str:
    if row["kind"] == "timespan":
        return f"{row['max'] // 1000 + 1} seconds"
    return str(row["max"] + 1)


def _too_small(row: dict) -> str:
    if row["kind"] == "timespan":
        return "-1" if row["min"] == 0 else "0"
    return str(row["min"] - 1)


RANGED = [k for k, row in TABLE.items() if row["kind"] in ("count", "bytes", "timespan")]
BAD_CASES = (
    [(k, _too_big(TABLE[k]), "out of range") for k in RANGED]
    + [(k, _too_small(TABLE[k]), "out of range") for k in RANGED]
    + [(k, NOT_A_VALUE, "") for k, row in TABLE.items() if row["kind"] not in ("text",)]
)


@pytest.mark.parametrize("key,value,fragment", BAD_CASES, ids=[f"{k}={v}" for k, v, _ in BAD_CASES])
def test_every_bad_value_is_one_error_line(tmp_path, key, value, fragment):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini_with(f"{key} = {value}\n"))
    line = assert_one_error_line(result, 2, f"app.ini: [server:main] {key}: ", fragment)
    assert "Traceback" not in result.stdout + result.stderr, line


@pytest.mark.parametrize(
    "option,message",
    [
        ("io_threads = 100000", "io_threads: 100000 is out of range (0 to 256; 0 = inline I/O)"),
        ("io_threads = -1", "io_threads: -1 is out of range (0 to 256; 0 = inline I/O)"),
        ("max_body_size = 99999999999999999999999999", "max_body_size: 99999999999999999999999999 is out of range"),
        ("stop_timeout = -1", "stop_timeout: -1 is out of range (0 to 1 hour; 0 = stop at once)"),
        ("drain_time = -5 seconds", "drain_time: -5 seconds is out of range"),
        ("header_timeout = 0", "header_timeout: 0 is out of range (1 millisecond to 1 hour)"),
        ("keepalive_timeout = 1e400", "keepalive_timeout: invalid timespan '1e400'"),
        ("io_timeout = 999999999999 days", "io_timeout: invalid timespan"),
        ("stop_timeout = nan", "stop_timeout: invalid timespan 'nan'"),
        ("monitoring.blocked_hub = 2 hours", "monitoring.blocked_hub: 2 hours is out of range"),
        ("python_threads = 2.5", "python_threads: '2.5' is not a whole number"),
        ("access_log = yes", "access_log: 'yes' is not true or false"),
        ("dispatch = fibers", "dispatch: 'fibers' is not one of gevent, threads"),
    ],
)
def test_explicit_bad_values(tmp_path, option, message):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini_with(option + "\n"))
    assert_one_error_line(result, 2, f"app.ini: [server:main] {message}")


def test_bad_value_is_reported_for_the_thrift_factory_too(tmp_path):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini_with("io_threads = 257\n", "baseplate.server.thrift"))
    assert_one_error_line(result, 2, "app.ini: [server:main] io_threads: 257 is out of range")


def test_edges_of_each_range_are_accepted():
    values = {}
    for key in RANGED:
        row = TABLE[key]
        values[key] = f"{row['max']} milliseconds" if row["kind"] == "timespan" else str(row["max"])
    parsed = _options.parse_server_options(values, "app.ini", "server:main")
    for key in RANGED:
        assert parsed.values[key] == TABLE[key]["max"]
    _core.Server(parsed.core, "wsgi", "threads")


# --------------------------------------------------------------------------- unknown options

UNKNOWN_LINE = re.compile(r"WARNING .*\[server:main\]: unknown options, ignored: (?P<rest>.*)$", re.M)


def test_unknown_options_get_one_warning_with_the_closest_name(run_server):
    server = run_server(HELLO_APP, server_options="max_concurency = 4\nworkers = 4\nstop_timout = 3\n")
    server.stop()
    lines = UNKNOWN_LINE.findall(server.stdout)
    assert lines == [
        "max_concurency (did you mean max_concurrency?), stop_timout (did you mean stop_timeout?), workers"
    ], server.stdout


def test_baseplate_py_and_default_options_are_not_unknown(run_server):
    known = "".join(f"{k} = false\n" for k in sorted(_options.BASEPLATE_PY_OPTIONS) if k != "factory")
    ini = (
        "[DEFAULT]\nredis.url = redis://localhost\nsecrets.path = ${HOME}/secrets.json\n\n"
        "[server:main]\nfactory = baseplate.server.wsgi\n"
        + known
        + "monitoring.blocked_hub = 2 seconds\n\n[app:main]\nfactory = app:make_app\n"
    )
    server = run_server(HELLO_APP, ini=ini)
    server.stop()
    assert "unknown options" not in server.stdout, server.stdout


def test_custom_factory_options_are_its_own(tmp_path, run_server):
    (tmp_path / "custom.py").write_text(
        "import gevent.pywsgi\n"
        "def make_server(server_config, listener, app):\n"
        "    return gevent.pywsgi.WSGIServer(listener, app)\n"
    )
    ini = "[server:main]\nfactory = custom\nio_threads = 100000\nworkers = 3\n\n[app:main]\nfactory = app:make_app\n"
    server = run_server(HELLO_APP, ini=ini, wait=False)
    server.wait_for_output(r"Listening on|error")
    server.kill()
    assert "unknown options" not in server.stdout and "io_threads" not in server.stderr, server.stdout + server.stderr


# --------------------------------------------------------------------------- stop defaults


@pytest.mark.parametrize("dispatch", ["gevent", "threads"])
def test_without_stop_options_a_request_in_flight_finishes(run_server, dispatch):
    """baseplate.py 2.7 drains 5 s and waits up to 10 s: a 3 s request in
    flight at SIGTERM is answered. (With both at 0 it was cut.)"""
    server = run_server(SLOW_APP, server_options=f"dispatch = {dispatch}\n", stop_defaults=True)
    started = time.monotonic()
    slow = Request(server.port, "/slow?id=deploy&s=3")
    slow.start()
    time.sleep(0.5)
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0, server.stdout + server.stderr
    assert slow.done.wait(10)
    assert slow.error is None, repr(slow.error)
    assert slow.result == (200, b"slow done deploy")
    # Bounded by the drain (5 s) and the request, not by stop_timeout.
    assert time.monotonic() - started < 5 + 0.5 + 4, server.stdout


@pytest.mark.parametrize("dispatch", ["gevent", "threads"])
def test_without_stop_options_an_idle_stop_ends_with_the_drain(run_server, dispatch):
    server = run_server(HELLO_APP, server_options=f"dispatch = {dispatch}\n", stop_defaults=True)
    server.send(signal.SIGTERM)
    sent = time.monotonic()
    assert server.wait(30) == 0, server.stdout + server.stderr
    took = time.monotonic() - sent
    assert 4.5 <= took < 5 + 3, f"{took:.2f}s\n{server.stdout}"
