"""Reads the INI file the way baseplate.py does.

configparser.RawConfigParser rules (``[DEFAULT]`` inheritance, ``=``/``:``,
comments, continuation lines, lower-cased option names) and ``$VAR`` /
``${VAR}`` expansion of values from the environment, as baseplate.py 2.x
does with ``os.path.expandvars``.
"""
from __future__ import annotations

import configparser
import os

from dataclasses import dataclass
from typing import Dict, FrozenSet, Mapping, MutableMapping, Optional

from baseplate_serve._errors import ConfigError


class _EnvironmentInterpolation(configparser.Interpolation):
    def before_get(
        self,
        parser: MutableMapping[str, Mapping[str, str]],
        section: str,
        option: str,
        value: str,
        defaults: Mapping[str, str],
    ) -> str:
        return os.path.expandvars(value)


@dataclass
class Configuration:
    """What the command needs from the config file."""

    filename: str
    server_section: str
    server: Dict[str, str]
    app_section: str
    app: Dict[str, str]
    has_logging_options: bool
    #: Keys of the server section that come from [DEFAULT] (shared with the app).
    server_inherited: FrozenSet[str] = frozenset()


def _section(parser: configparser.RawConfigParser, filename: str, name: str) -> Dict[str, str]:
    if not parser.has_section(name):
        existing = ", ".join(f"[{s}]" for s in parser.sections()) or "none"
        raise ConfigError(f"{filename}: no section [{name}] (sections: {existing})")
    return dict(parser.items(name))


def read_config(filename: str, server_name: Optional[str], app_name: str) -> Configuration:
    """Reads ``filename``; raises ConfigError naming the file, section and key."""
    parser = configparser.RawConfigParser(interpolation=_EnvironmentInterpolation())
    try:
        with open(filename, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as exc:
        raise ConfigError(f"{filename}: cannot read the config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{filename}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except configparser.Error as exc:
        message = str(exc).replace("\n", " ")
        raise ConfigError(f"{filename}: invalid INI syntax: {message}") from None

    server_section = f"server:{server_name}" if server_name else ""
    server = _section(parser, filename, server_section) if server_name else {}
    app_section = f"app:{app_name}"
    app = _section(parser, filename, app_section)
    for section, values in ((server_section, server), (app_section, app)):
        if section and not values.get("factory", "").strip():
            raise ConfigError.at(filename, section, "factory", "missing (expected module:callable)")
    return Configuration(
        filename=filename,
        server_section=server_section,
        server=server,
        app_section=app_section,
        app=app,
        has_logging_options=parser.has_section("loggers"),
        # raw: [DEFAULT]'s values are stored unexpanded.
        server_inherited=frozenset(
            k for k, v in parser.defaults().items() if server_name and parser.get(server_section, k, raw=True) == v
        ),
    )
