"""A WSGI app that makes one HTTP call per request to an upstream service,
as a baseplate service calling another does, then answers with what the
upstream said.

The upstream is bench/native's raw_asio_server (a constant reply), started
by the harness on the load generator's core; its address comes in
BENCH_UPSTREAM (host:port). Connections are kept in a pool (a list: pop one,
or open a new one; push it back when the reply is read), so the steady
state makes no new connection. http.client over the stdlib socket: under
gevent dispatch (ours, baseplate.py's pywsgi) the socket is gevent's
(monkey-patched), so the wait for the upstream yields to other requests;
under threads dispatch it releases the GIL.
"""
import http.client
import os

from typing import List

_host, _, _port = os.environ.get("BENCH_UPSTREAM", "127.0.0.1:8080").rpartition(":")
_pool: List[http.client.HTTPConnection] = []


def _call() -> bytes:
    conn = _pool.pop() if _pool else http.client.HTTPConnection(_host, int(_port), timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
    except BaseException:
        conn.close()
        raise
    _pool.append(conn)
    return body


def upstream_app(environ, start_response):
    body = _call()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def make_app(app_config):
    return upstream_app
