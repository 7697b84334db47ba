"""The dispatchers (threads and gevent) and the one stop sequence they share
(_stop.py): bounded stops with hung or spinning requests, signals answered
while the hub is busy, the blocked-hub monitor, SIGHUP, a second signal,
and connections whose first request arrives during the stop."""
from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

from typing import List, Optional, Tuple

import pytest

from clients import RawConnection

APP = """
import logging
import time

from urllib.parse import parse_qs

log = logging.getLogger("testapp")


def spin_the_cpu(seconds):
    # Never yields: with gevent dispatch it keeps the hub.
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def make_app(app_config):
    def app(environ, start_response):
        q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        path = environ["PATH_INFO"]
        if path == "/slow":
            log.info("slow-start %s", q.get("id", ""))
            time.sleep(float(q.get("s", "2")))  # cooperative under gevent (monkey-patched)
            log.info("slow-end %s", q.get("id", ""))
            body = ("slow done " + q.get("id", "")).encode()
        elif path == "/spin":
            log.info("spin-start")
            spin_the_cpu(float(q.get("s", "15")))
            body = b"spun"
        else:
            body = b"fast " + path.encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return app
"""

BOTH = pytest.mark.parametrize("dispatch", ["threads", "gevent"])


def options(dispatch: str, extra: str = "") -> str:
    return f"dispatch = {dispatch}\n" + textwrap.dedent(extra)


class Request(threading.Thread):
    """One request on its own connection, in the background."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.result: Optional[Tuple[int, bytes]] = None
        self.connection: Optional[str] = None  #: the response's Connection header
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            self.connection = resp.getheader("Connection")
            self.result = (resp.status, resp.read())
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            conn.close()
            self.done.set()


def lines(out: str, text: str) -> List[str]:
    return [line for line in out.splitlines() if text in line]


def test_threads_four_hung_requests_end_within_stop_timeout(run_server):
    # Before: the workers were joined one after the other, 5 s each: 3 + 4 * 5 s.
    server = run_server(APP, server_options=options("threads", "stop_timeout = 3 seconds\ndrain_time = 0\n"))
    hung = [Request(server.port, f"/slow?id=h{i}&s=60") for i in range(4)]
    for i in range(4):
        server.wait_for_output(f"slow-start h{i}")
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, elapsed
    out = server.stdout
    assert lines(out, "stop_timeout reached: closed 4 connection(s) with requests in flight"), out
    assert lines(out, "4 worker thread(s) still running a request after the stop"), out
    assert out.rstrip().endswith("Stopped"), out
    for r in hung:
        assert r.done.wait(5) and r.result is None


def test_gevent_spinning_request_cannot_hold_the_stop(run_server):
    # Before: SIGTERM was acted on only when the spin yielded (after 15 s).
    server = run_server(APP, server_options=options("gevent", "stop_timeout = 2 seconds\ndrain_time = 0\n"))
    spin = Request(server.port, "/spin?s=15")
    server.wait_for_output("spin-start")
    started = time.monotonic()
    server.send(signal.SIGTERM)
    # Logged when the signal arrives, by a thread that does not need the hub.
    server.wait_for_output("Received SIGTERM, stopping gracefully", timeout=2)
    assert time.monotonic() - started < 1.0
    status = server.wait(30)
    elapsed = time.monotonic() - started
    assert elapsed < 4.0, elapsed
    # The exit deadline ended it: status 1 and a line saying what was cut.
    assert status == 1, (status, server.stdout, server.stderr)
    assert re.search(r"stop exceeded drain_time \+ stop_timeout \+ 1 s \(3 s\): exiting with 1 connection open, "
                     r"1 request in the app", server.stderr), server.stderr
    assert spin.done.wait(5) and spin.result is None


def test_gevent_sigusr1_during_a_spin_dumps_the_spinning_frame(run_server):
    server = run_server(APP, server_options=options("gevent", "stop_timeout = 1 second\ndrain_time = 0\n"))
    Request(server.port, "/spin?s=6")
    server.wait_for_output("spin-start")
    time.sleep(0.2)
    sent = time.monotonic()
    server.send(signal.SIGUSR1)
    server.wait_for_output(r"Native core: ", timeout=10)
    elapsed = time.monotonic() - sent
    assert elapsed < 2.0, elapsed
    out = server.stdout
    dump = out[out.index("Received SIGUSR1") :]
    assert "in spin_the_cpu" in dump, dump
    assert re.search(r"Thread MainThread \(\d+\):", dump), dump
    server.kill()


@pytest.mark.parametrize(
    "setting, spin",
    [("", 1.6), ("monitoring.blocked_hub = 200 milliseconds\n", 0.6)],
    ids=["default-1s", "200ms"],
)
def test_gevent_blocked_hub_warning_names_the_spinning_function(run_server, setting, spin):
    server = run_server(APP, server_options=options("gevent", setting))
    r = Request(server.port, f"/spin?s={spin}")
    assert r.done.wait(30) and r.result == (200, b"spun")
    server.wait_for_output(r"The gevent hub has been blocked", timeout=5)
    # The hub runs again: other requests are answered.
    assert Request(server.port, "/after").done.wait(10)
    assert server.stop(timeout=15) == 0
    out = server.stdout
    warnings = [line for line in out.splitlines() if "The gevent hub has been blocked" in line]
    assert len(warnings) == 1, out  # one per blocked stretch
    assert "WARNING" in warnings[0] and "baseplate_serve.monitor" in warnings[0], warnings[0]
    assert "in spin_the_cpu" in out[out.index("The gevent hub has been blocked") :], out


def test_gevent_short_blocks_under_the_threshold_are_not_reported(run_server):
    server = run_server(APP, server_options=options("gevent", "monitoring.blocked_hub = 2 seconds\n"))
    r = Request(server.port, "/spin?s=0.5")
    assert r.done.wait(30) and r.result == (200, b"spun")
    time.sleep(0.5)
    assert server.stop(timeout=15) == 0
    assert "blocked" not in server.stdout, server.stdout


@BOTH
def test_first_request_100ms_after_sigterm_is_served_with_connection_close(run_server, dispatch):
    server = run_server(APP, server_options=options(dispatch, "stop_timeout = 10 seconds\ndrain_time = 0\n"))
    slow = Request(server.port, "/slow?id=hold&s=2")  # holds the stop open
    server.wait_for_output("slow-start hold")
    with RawConnection(server.port) as late:
        time.sleep(0.2)  # accepted before the signal
        server.send(signal.SIGTERM)
        server.wait_for_output("Received SIGTERM, stopping gracefully")
        time.sleep(0.1)
        assert late.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")
        resp = late.read_response()
        assert resp.status == 200 and resp.body == b"fast /late", resp
        assert "close" in resp.connection_tokens(), resp.headers
    assert server.wait(30) == 0
    assert slow.result == (200, b"slow done hold")
    assert slow.connection == "close"


THRIFT_IDL = """
service Sleeper {
  string nap(1: i32 ms),
}
"""

THRIFT_APP = """
import logging, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))
from sleeper import Sleeper

log = logging.getLogger("testapp")


class Handler:
    def nap(self, ms):
        log.info("nap-start %d", ms)
        time.sleep(ms / 1000.0)
        return "rested %d" % ms


def make_processor(app_config):
    return Sleeper.Processor(Handler())
"""


@BOTH
def test_thrift_call_100ms_after_sigterm_on_an_open_connection_is_served(run_server, tmp_path, dispatch):
    (tmp_path / "sleeper.thrift").write_text(THRIFT_IDL)
    (tmp_path / "gen").mkdir()
    subprocess.run(["thrift", "--gen", "py", "-out", "gen", "sleeper.thrift"], cwd=tmp_path, check=True)
    (tmp_path / "app.py").write_text(textwrap.dedent(THRIFT_APP))
    ini = (
        "[server:main]\nfactory = baseplate.server.thrift\n"
        + options(dispatch, "stop_timeout = 10 seconds\ndrain_time = 0\n")
        + "\n[app:main]\nfactory = app:make_processor\n"
    )
    server = run_server(ini=ini)
    sys.path.insert(0, str(tmp_path / "gen"))
    try:
        from sleeper import Sleeper
        from thrift.protocol import TBinaryProtocol
        from thrift.transport import TSocket, TTransport

        def client() -> Tuple[object, object]:
            sock = TSocket.TSocket("127.0.0.1", server.port)
            sock.setTimeout(30_000)
            trans = TTransport.TFramedTransport(sock)
            trans.open()
            return trans, Sleeper.Client(TBinaryProtocol.TBinaryProtocol(trans))

        slow_trans, slow_client = client()
        slow_result: List[str] = []
        holder = threading.Thread(target=lambda: slow_result.append(slow_client.nap(2000)), daemon=True)
        holder.start()
        server.wait_for_output("nap-start 2000")
        late_trans, late_client = client()  # opened before the signal
        time.sleep(0.2)
        server.send(signal.SIGTERM)
        server.wait_for_output("Received SIGTERM, stopping gracefully")
        time.sleep(0.1)
        assert late_client.nap(1) == "rested 1"
        holder.join(30)
        assert slow_result == ["rested 2000"]
        late_trans.close()
        slow_trans.close()
    finally:
        sys.path.remove(str(tmp_path / "gen"))
        for name in ("sleeper", "sleeper.Sleeper", "sleeper.ttypes", "sleeper.constants"):
            sys.modules.pop(name, None)
    assert server.wait(30) == 0


@BOTH
def test_sighup_is_a_graceful_stop(run_server, dispatch):
    # Before: SIGHUP's default action killed the process (status 129).
    server = run_server(APP, server_options=options(dispatch, "stop_timeout = 10 seconds\ndrain_time = 0\n"))
    slow = Request(server.port, "/slow?id=hup&s=1")
    server.wait_for_output("slow-start hup")
    server.send(signal.SIGHUP)
    assert server.wait(30) == 0
    assert slow.done.wait(5)
    assert slow.result == (200, b"slow done hup"), slow.error
    assert slow.connection == "close"  # answered during the stop
    assert lines(server.stdout, "Received SIGHUP, stopping gracefully"), server.stdout


@BOTH
def test_second_signal_cuts_the_drain(run_server, dispatch):
    server = run_server(APP, server_options=options(dispatch, "stop_timeout = 30 seconds\ndrain_time = 30 seconds\n"))
    server.send(signal.SIGTERM)
    server.wait_for_output("Draining for 30 s before stopping")
    # Still serving while it drains.
    r = Request(server.port, "/during-drain")
    assert r.done.wait(10) and r.result == (200, b"fast /during-drain")
    started = time.monotonic()
    server.send(signal.SIGINT)
    assert server.wait(30) == 0
    assert time.monotonic() - started < 3.0
    assert lines(server.stdout, "Received SIGINT during the stop: ending the drain and the wait now"), server.stdout


@BOTH
def test_stop_with_nothing_in_flight_ends_with_the_drain(run_server, dispatch):
    server = run_server(APP, server_options=options(dispatch, "stop_timeout = 30 seconds\ndrain_time = 1 second\n"))
    started = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0
    assert 1.0 <= time.monotonic() - started < 3.0
    assert server.stderr == ""



# -- GracefulStop in-process, as a custom server or the pywsgi path drives it.
# Each runs in a child interpreter: run() arms the process's exit deadline.

STOP_DRIVER = """
import logging, signal, sys, threading, time
from baseplate_serve._stop import GracefulStop
from baseplate_serve import _core

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
in_flight = [int(sys.argv[1])]
calls = []
stop = GracefulStop(
    float(sys.argv[2]), float(sys.argv[3]),
    stop_accepting=lambda: calls.append("stop_accepting"),
    in_flight=lambda: in_flight[0],
    close_remaining=lambda: (calls.append("close_remaining"), in_flight[0])[1],
)
stop.install_signal_handlers()
if sys.argv[4] == "finish":
    threading.Timer(0.5, lambda: (in_flight.__setitem__(0, 0), stop.wake())).start()
print("ready", flush=True)
assert stop.wait_for_signal(30)
started = time.monotonic()
forced = stop.run()
print("calls", calls, "forced", forced, "took %.1f" % (time.monotonic() - started), "armed", _core.exit_deadline_armed(), flush=True)
"""


@pytest.mark.parametrize(
    "args, expected",
    [
        (("0", "0", "10", "-"), r"calls \['stop_accepting', 'close_remaining'\] forced 0 took 0\.0 armed True"),
        (("2", "0", "10", "finish"), r"calls \['stop_accepting', 'close_remaining'\] forced 0 took (0\.[4-9]|1\.\d)"),
        (("3", "0", "0.5", "-"), r"forced 3 took (0\.[5-9]|1\.\d)"),
        (("0", "0.7", "10", "-"), r"forced 0 took (0\.[7-9]|1\.\d)"),
    ],
    ids=["nothing-in-flight", "in-flight-finishes", "stop-timeout-closes", "drain"],
)
def test_graceful_stop_sequence_in_process(tmp_path, args, expected):
    script = tmp_path / "driver.py"
    script.write_text(STOP_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert "INFO baseplate_serve: Received SIGTERM, stopping gracefully" in out, out
    assert re.search(expected, out), out
    if args[0] == "3":
        assert "WARNING baseplate_serve: stop_timeout reached: closed 3 connection(s) with requests in flight" in out


def test_graceful_stop_exit_deadline_ends_a_stuck_host(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(
        "import logging, signal, sys, time\n"
        "from baseplate_serve._stop import GracefulStop\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(levelname)s %(name)s: %(message)s')\n"
        "stop = GracefulStop(0, 0.5, stop_accepting=lambda: time.sleep(60))  # a server.stop() that hangs\n"
        "stop.run(signal.SIGTERM)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert time.monotonic() - started < 5
    assert "CRITICAL baseplate_serve: stop exceeded drain_time + stop_timeout + 1 s (1.5 s): exiting with the server's own stop still under way" in proc.stderr


# -- the dispatcher objects, as the binding shows them


def _threads_now() -> int:
    import os

    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("dispatch, kind, new_threads", [("threads", "ThreadsDispatcher", 1), ("gevent", "GeventDispatcher", 0)])
def test_each_server_has_its_own_dispatcher_object(dispatch, kind, new_threads):
    from baseplate_serve import _core
    from baseplate_serve._file_wrapper import FileWrapper

    server = _core.Server({}, "wsgi", dispatch)
    assert server.dispatcher is None  # made with the Python app
    before = _threads_now()
    server.set_wsgi_app(lambda environ, start_response: [], FileWrapper, "localhost", "80")
    # threads: the work queue's stall watchdog; gevent: no thread at all.
    assert _threads_now() - before == new_threads
    d = server.dispatcher
    assert type(d).__name__ == kind and d.name == dispatch
    # Two servers, two dispatchers: no process-wide mode.
    other = _core.Server({}, "wsgi", "gevent" if dispatch == "threads" else "threads")
    other.set_wsgi_app(lambda environ, start_response: [], FileWrapper, "localhost", "80")
    assert other.dispatcher.name != d.name and server.dispatcher.name == dispatch
    with pytest.raises(ValueError):
        _core.Server({}, "wsgi", "fibers")


def test_bad_blocked_hub_threshold_is_a_config_error(run_server):
    server = run_server(APP, server_options=options("gevent", "monitoring.blocked_hub = soon\n"), wait=False)
    assert server.wait() == 2
    assert "baseplate-serve: error: app.ini: [server:main] monitoring.blocked_hub: not a timespan: 'soon'" in server.stderr
    assert "Traceback" not in server.stderr


GEVENT_DRIVER = """
from gevent import monkey; monkey.patch_all()
import logging, signal, sys, time
import gevent, gevent.event
from baseplate_serve._stop import GracefulStop

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
in_flight = [1]
stop = GracefulStop(0, 10, stop_accepting=lambda: None, in_flight=lambda: in_flight[0], event=gevent.event.Event())
stop.install_signal_handlers(use_gevent=True)

def finish():
    in_flight[0] = 0
    stop.wake()

gevent.spawn_later(0.5, finish)  # a request finishing on the hub meanwhile
print("ready", flush=True)
assert stop.wait_for_signal(30)
started = time.monotonic()
print("forced", stop.run(), "took %.1f" % (time.monotonic() - started), flush=True)
"""


def test_graceful_stop_on_the_gevent_hub_in_process(tmp_path):
    # As the pywsgi path and a gevent custom server drive it.
    script = tmp_path / "gdriver.py"
    script.write_text(GEVENT_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, (out, err)
    assert "Received SIGHUP, stopping gracefully" in out
    assert re.search(r"forced 0 took [01]\.\d", out), out  # not the 10 s stop_timeout


def test_gevent_dumps_and_stops_while_requests_and_native_records_log(run_server):
    # The signal thread logs (a dump) while the hub logs native records (the
    # access log) and requests log: a handler's lock shared by an OS thread
    # and the hub must never leave the hub waiting inside a callback.
    server = run_server(APP, server_options=options("gevent", "access_log = true\nstop_timeout = 10 seconds\ndrain_time = 0\n"))
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            Request(server.port, "/fast").done.wait(10)

    clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for c in clients:
        c.start()
    for _ in range(15):
        server.send(signal.SIGUSR1)
        time.sleep(0.05)
    done.set()
    for c in clients:
        c.join(15)
    started = time.monotonic()
    assert server.stop(timeout=20) == 0, server.stderr[-3000:]
    assert time.monotonic() - started < 5
    assert "Traceback" not in server.stderr, server.stderr[-3000:]
    assert server.stdout.count("Received SIGUSR1, dumping stack traces") >= 1
