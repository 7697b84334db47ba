"""A baseplate.py 2.7 Thrift service: BaseplateServiceV2 wrapped with
baseplateify_processor; it logs the trace headers each call carried."""
import logging

from baseplate import Baseplate
from baseplate.frameworks.thrift import baseplateify_processor
from baseplate.thrift import BaseplateServiceV2

log = logging.getLogger("thrift_service")


class Handler:
    def is_healthy(self, context, request):
        headers = context.headers
        log.info(
            "thrift call Trace=%s traceparent=%s",
            headers.get(b"Trace", b"").decode(),
            headers.get(b"traceparent", b"").decode(),
        )
        return True


def make_processor(app_config):
    baseplate = Baseplate(app_config)
    baseplate.configure_observers()
    return baseplateify_processor(BaseplateServiceV2.Processor(Handler()), log, baseplate)
