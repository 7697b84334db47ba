"""baseplate-serve: a native (C++) server for baseplate-style services.

The command line is ``baseplate-serve``; apps parse their options with
:mod:`baseplate_serve.config` (also importable as ``baseplate.config`` and
``baseplate.lib.config``).
"""
from baseplate_serve._trace import current_span_id, current_trace_id


def __getattr__(name: str) -> str:
    # __version__ is looked up on first use: importlib.metadata costs a
    # server's start-up about 50 ms, and serving never needs it.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("baseplate-serve")
    except PackageNotFoundError:  # running from a source tree
        value = "0+unknown"
    globals()["__version__"] = value
    return value


__all__ = ["__version__", "current_trace_id", "current_span_id"]
