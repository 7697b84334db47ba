"""baseplate-serve: a native (C++) server for baseplate-style services.

The command line is ``baseplate-serve``; apps parse their options with
:mod:`baseplate_serve.config` (also importable as ``baseplate.config`` and
``baseplate.lib.config``).
"""
from baseplate_serve._trace import current_span_id, current_trace_id


def __getattr__(name: str) -> str:
    # __version__ is looked up on first use, and from the installed metadata
    # only as a last resort (importlib.metadata costs start-up about 50 ms):
    # a wheel has it in _version.py (written by the build), a source tree in
    # pyproject.toml.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _source_tree_version()
    if value is None:
        try:
            from baseplate_serve._version import __version__ as value
        except ImportError:  # a copy of the tree elsewhere (make test-asan)
            value = _installed_version()
    globals()["__version__"] = value
    return value


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("baseplate-serve")
    except PackageNotFoundError:
        return "0+unknown"


def _source_tree_version() -> "str | None":
    """The version in the pyproject.toml of the source tree this package is
    imported from (PYTHONPATH=python), None for an installed package."""
    import os
    import re

    pyproject = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "pyproject.toml")
    try:
        with open(pyproject, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return match.group(1) if match else None


__all__ = ["__version__", "current_trace_id", "current_span_id"]
