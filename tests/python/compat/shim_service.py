"""An app that only needs baseplate.config (the shim, when baseplate.py is gone)."""
from baseplate import config


def make_app(app_config):
    cfg = config.parse_config(app_config, {"greeting": config.String})

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [cfg.greeting.encode()]

    return app
