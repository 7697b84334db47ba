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


def test_config_example_served_end_to_end():
    """examples/config_app parses its options with baseplate.config."""
    import json
    import shutil
    from pathlib import Path

    from conftest import Server, free_port

    example = Path(__file__).resolve().parents[2] / "examples" / "config_app"
    port = free_port()
    server = Server(["--bind", f"127.0.0.1:{port}", "app.ini"], example, port=port).wait_listening()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        parsed = json.loads(resp.read())
        conn.close()
        assert parsed["workers"] == 4
        assert parsed["timeouts"] == {"read": 0.25, "idle": 30}
        assert parsed["backends"][2] == {"family": "AF_UNIX", "address": "/run/gamma.sock"}
    finally:
        assert server.stop() == 0
        shutil.rmtree(example / "__pycache__", ignore_errors=True)
