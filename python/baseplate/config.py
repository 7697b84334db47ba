"""``baseplate.config``: configuration parsing, the same API as ``baseplate.lib.config``.

This module re-exports :py:mod:`baseplate_serve.config`.  ``baseplate`` is a
namespace package here (no ``__init__.py``), so when reddit's baseplate.py is
installed too, its regular ``baseplate`` package takes precedence.
"""
from baseplate_serve.config import *  # noqa: F401,F403
from baseplate_serve.config import T  # noqa: F401
from baseplate_serve.config import __all__  # noqa: F401
