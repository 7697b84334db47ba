"""Default logging: the root logger to stdout, or the INI file's own setup."""
from __future__ import annotations

import logging
import logging.config
import sys
import warnings

from baseplate_serve._trace import install_record_factory, trace_id_var

#: Time, level, process id, the request's trace id ("-" outside one), logger, message.
DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] [%(trace_id)s] %(name)s: %(message)s"


def configure_logging(filename: str, has_logging_options: bool, debug: bool) -> None:
    """Root logger at INFO (DEBUG with ``--debug``) printing to stdout;
    a ``[loggers]`` section hands the setup to ``logging.config.fileConfig``."""
    install_record_factory()
    logging.captureWarnings(True)
    level = logging.DEBUG if debug else logging.INFO
    if debug:
        warnings.simplefilter("always")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(DEFAULT_FORMAT))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    if has_logging_options:
        logging.config.fileConfig(filename, disable_existing_loggers=False)
        if debug:
            root.setLevel(logging.DEBUG)


def emit_native(records: list) -> None:
    """Writes the records the native core queued, (level, logger, message,
    trace id), through Python's logging: same handlers, same format."""
    for level, name, message, trace_id in records:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            token = trace_id_var.set(trace_id)
            try:
                logger.log(level, "%s", message)
            finally:
                trace_id_var.reset(token)
