"""baseplate-serve: a native (C++) server for baseplate-style services.

The command line is ``baseplate-serve``; apps parse their options with
:mod:`baseplate_serve.config` (also importable as ``baseplate.config`` and
``baseplate.lib.config``).
"""
from importlib.metadata import PackageNotFoundError, version as _version

from baseplate_serve._trace import current_span_id, current_trace_id

try:
    __version__ = _version("baseplate-serve")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__", "current_trace_id", "current_span_id"]
