"""Default logging: the root logger to stdout, or the INI file's own setup."""
from __future__ import annotations

import logging
import logging.config
import sys
import warnings

DEFAULT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(filename: str, has_logging_options: bool, debug: bool) -> None:
    """Root logger at INFO (DEBUG with ``--debug``) printing to stdout;
    a ``[loggers]`` section hands the setup to ``logging.config.fileConfig``."""
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
    """Writes records that the native core queued: (level, logger, message)."""
    for level, name, message in records:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", message)
