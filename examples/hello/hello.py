"""The smallest WSGI app: what `make run` serves."""


def hello_app(environ, start_response):
    body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def make_app(app_config):
    """The app factory: receives the [app:main] options as a dict."""
    return hello_app
