"""A WSGI app that waits 10 ms (as if on a backend), then says hello.

time.sleep: under gevent dispatch (ours, baseplate.py's pywsgi) the stdlib
is monkey-patched, so the wait yields to other requests; under threads
dispatch it releases the GIL.
"""
import time


def sleep10_app(environ, start_response):
    time.sleep(0.010)
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def make_app(app_config):
    return sleep10_app
