"""A WSGI app that parses its options with ``baseplate.config``.

Served with ``baseplate-serve app.ini``; every request is answered with the
parsed configuration as JSON.
"""
import datetime
import json

from typing import Any
from typing import Callable
from typing import Dict
from typing import Iterable
from typing import List
from typing import Tuple

from baseplate import config


# The spec: nested dictionaries match the dotted option names of app.ini.
SPEC: config.ConfigSpec = {
    "greeting": config.Optional(config.String, default="hello"),
    "workers": config.Integer,
    "cache": {
        "ttl": config.Timespan,
        "size": config.Integer(base=16),
    },
    "timeouts": {
        "read": config.Timespan,
        # "30 seconds", or a bare number of seconds as older configs had it.
        "idle": config.Fallback(config.Timespan, config.Integer),
    },
    "backends": config.TupleOf(config.Endpoint),
    "tags": config.Optional(config.TupleOf(config.String), default=()),
    "sample_rate": config.Optional(config.Percent, default=1.0),
    "quotas": config.DictOf(config.Integer),
}

StartResponse = Callable[[str, List[Tuple[str, str]]], Any]
WSGIApp = Callable[[Dict[str, Any], StartResponse], Iterable[bytes]]


def to_json(value: Any) -> Any:
    """Turn parsed values into JSON-friendly ones."""
    if isinstance(value, config.EndpointConfiguration):  # a named tuple
        return {"family": value.family.name, "address": str(value)}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def make_app(app_config: Dict[str, str]) -> WSGIApp:
    """Parse the ``[app:main]`` options and return the WSGI app.

    An invalid option raises :py:exc:`baseplate.config.ConfigurationError`
    naming it, e.g. ``timeouts.read: unknown unit``, and the server does not
    start.
    """
    cfg = config.parse_config(app_config, SPEC)
    body = json.dumps(to_json(cfg), sort_keys=True).encode("utf-8") + b"\n"

    def app(environ: Dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app
