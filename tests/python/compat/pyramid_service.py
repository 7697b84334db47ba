"""A baseplate.py 2.7 Pyramid service (BaseplateConfigurator) that calls the
Thrift service through baseplate.clients.thrift.ThriftClient."""
import logging
import time

from baseplate import Baseplate
from baseplate.clients.thrift import ThriftClient
from baseplate.frameworks.pyramid import BaseplateConfigurator, StaticTrustHandler
from baseplate.lib import config
from baseplate.server import SERVER_STATE
from baseplate.thrift import BaseplateServiceV2
from baseplate.thrift.ttypes import IsHealthyProbe, IsHealthyRequest
from pyramid.config import Configurator

log = logging.getLogger("pyramid_service")


def call(request):
    log.info("pyramid calling thrift")
    ok = request.downstream.is_healthy(IsHealthyRequest(probe=IsHealthyProbe.READINESS))
    return {"ok": ok}


def state(request):
    return {"state": SERVER_STATE.state.name}


def health(request):
    return {"healthy": True}


def spin_the_hub(request):
    """Holds the gevent hub: a CPU loop that never yields."""
    end = time.monotonic() + float(request.params.get("seconds", "1.5"))
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"spun": n > 0}


def make_wsgi_app(app_config):
    cfg = config.parse_config(app_config, {"greeting": config.String})
    assert cfg.greeting == "hello"
    baseplate = Baseplate(app_config)
    baseplate.configure_observers()
    baseplate.configure_context({"downstream": ThriftClient(BaseplateServiceV2.Client)})
    configurator = Configurator(settings=app_config)
    configurator.include(
        BaseplateConfigurator(baseplate, header_trust_handler=StaticTrustHandler(trust_headers=True)).includeme
    )
    for name, view in (("call", call), ("state", state), ("health", health), ("spin", spin_the_hub)):
        configurator.add_route(name, f"/{name}")
        configurator.add_view(view, route_name=name, renderer="json")
    return configurator.make_wsgi_app()
