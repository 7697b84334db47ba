"""The hello example answers through the real CLI."""
import http.client

APP = """
def make_app(app_config):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hi ", environ["PATH_INFO"].encode("latin-1")]
    return app
"""


def test_hello(run_server):
    server = run_server(APP)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/a%20b")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == b"hi /a b"
    conn.close()
    assert server.stop() == 0
