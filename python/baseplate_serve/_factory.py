"""Loads ``module:callable`` factories named in the config file."""
from __future__ import annotations

import importlib

from typing import Any, Callable

from baseplate_serve._errors import AppError, ConfigError


def load_factory(spec: str, default_name: str, *, filename: str, section: str) -> Callable[..., Any]:
    """Imports the module named by ``spec`` and returns its callable.

    ``spec`` is ``module:callable``, or just ``module`` for ``default_name``.
    A name that does not resolve is a ConfigError; an import that fails
    inside the app's own code is an AppError (its traceback is kept).
    """
    spec = spec.strip()
    module_name, sep, name = spec.partition(":")
    module_name, name = module_name.strip(), (name.strip() if sep else default_name)
    if not module_name or not name:
        raise ConfigError.at(filename, section, "factory", f"{spec!r} is not of the form module:callable")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError.at(filename, section, "factory", f"module {module_name!r} not found") from None
        raise AppError(f"{filename}: [{section}] factory: importing {module_name!r} failed") from exc
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise AppError(f"{filename}: [{section}] factory: importing {module_name!r} failed") from exc
    try:
        factory = getattr(module, name)
    except AttributeError:
        raise ConfigError.at(
            filename, section, "factory", f"module {module_name!r} has no attribute {name!r}"
        ) from None
    if not callable(factory):
        raise ConfigError.at(
            filename, section, "factory", f"{module_name}:{name} is not callable ({type(factory).__name__})"
        )
    return factory


def call_app_factory(factory: Callable[..., Any], app_config: dict, *, filename: str, section: str) -> Any:
    """Calls the app factory; its failure is an AppError with the traceback."""
    try:
        return factory(app_config)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise AppError(f"{filename}: [{section}] factory: the app factory raised {type(exc).__name__}: {exc}") from exc

