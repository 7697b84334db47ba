"""Configuration parsing and validation, compatible with ``baseplate.lib.config``.

An application receives its configuration as a flat dictionary of strings
(the options of the ``[app:main]`` section of its INI file).  This module turns
that dictionary into a structured, typed object by checking it against a
*spec*: a (possibly nested) dictionary that maps each option name to a parser.

.. code-block:: python

    from baseplate import config

    cfg = config.parse_config(app_config, {
        "port": config.Integer,
        "timeouts": {
            "read": config.Timespan,
        },
        "hosts": config.TupleOf(config.String),
        "sample_rate": config.Optional(config.Percent, default=0.1),
    })

    cfg.port             # 8080
    cfg.timeouts.read    # datetime.timedelta(seconds=3)

A parser is any callable taking the raw string and returning a value; it
signals bad input by raising :py:exc:`ValueError`.  Nested dictionaries in the
spec correspond to dotted option names (``timeouts.read`` above).  Any error
raised by a parser is reported as a :py:exc:`ConfigurationError` that carries
the full dotted option name.

The behaviour of every parser (accepted inputs, results, exception types and
messages) matches ``baseplate.lib.config`` from baseplate.py 2.7.  Only the
standard library is used.
"""
import base64
import datetime
import functools
import grp
import os
import pwd
import re
import socket
import typing

from typing import Any
from typing import Callable
from typing import Dict
from typing import Generic
from typing import IO
from typing import NamedTuple
from typing import NewType
from typing import Sequence
from typing import Set
from typing import TypeVar
from typing import Union


__all__ = [
    "ConfigurationError",
    "String",
    "Float",
    "Integer",
    "Boolean",
    "InternetAddress",
    "EndpointConfiguration",
    "Endpoint",
    "Base64",
    "File",
    "Timespan",
    "TimespanWithLegacyFallback",
    "InfiniteTimespanType",
    "InfiniteTimespan",
    "TimespanOrInfinite",
    "Percent",
    "UnixUser",
    "UnixGroup",
    "OneOf",
    "TupleOf",
    "DefaultFromEnv",
    "Optional",
    "Fallback",
    "ConfigNamespace",
    "ConfigSpecItem",
    "ConfigSpec",
    "RawConfig",
    "Parser",
    "SpecParser",
    "CallableParser",
    "DictOf",
    "parse_config",
]

T = TypeVar("T")


# pylint: disable=invalid-name


class ConfigurationError(Exception):
    """The configuration does not satisfy the spec.

    :param key: The full dotted name of the offending option.
    :param error: What is wrong with it: a message or the exception raised by
        the option's parser.

    The string form of the exception is ``"<key>: <error>"``.
    """

    def __init__(self, key: str, error: Union[str, Exception]):
        super().__init__(f"{key}: {error}")
        self.key = key
        self.error = error


# --------------------------------------------------------------------------
# Scalar parsers
# --------------------------------------------------------------------------


def String(text: str) -> str:  # noqa: N802
    """Return the raw string; an empty value is an error."""
    if not text:
        raise ValueError("no value specified")
    return text


def Float(text: str) -> float:  # noqa: N802
    """Return a floating-point number, parsed the way :py:class:`float` does."""
    return float(text)


def Integer(  # noqa: N802
    text: typing.Optional[str] = None, base: int = 10
) -> Union[int, Callable[[str], int]]:
    """Return an integer; non-whole numbers such as ``"1.2"`` are an error.

    Two call forms are supported:

    * ``Integer(text)`` (or ``Integer`` used directly as a parser) parses
      ``text`` in base 10;
    * ``Integer(base=N)`` returns a parser for integers written in base ``N``
      (``Integer(base=16)`` accepts ``"1f"`` and ``"0x1F"``; base 0 infers the
      base from a ``0x``/``0o``/``0b`` prefix).

    :param text: The value to parse, or ``None`` to get a parser back.
    :param base: The base the integer is written in.
    """
    if text is None:
        return functools.partial(int, base=base)
    return int(text, base=base)


def Boolean(text: str) -> bool:  # noqa: N802
    """Return ``True`` for ``"true"`` and ``False`` for ``"false"``, any case."""
    return OneOf(true=True, false=False)(text.lower())


class InternetAddress(NamedTuple):
    """A host and TCP port, as expected by :py:mod:`socket` for ``AF_INET``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class EndpointConfiguration(NamedTuple):
    """A remote endpoint: a 2-tuple of ``family`` and ``address``.

    ``family`` is :py:data:`socket.AF_INET` (then ``address`` is an
    :py:class:`InternetAddress`) or :py:data:`socket.AF_UNIX` (then
    ``address`` is the socket's path as a string).
    """

    family: socket.AddressFamily  # pylint: disable=no-member
    address: Union[InternetAddress, str]

    def __str__(self) -> str:
        return str(self.address)


def Endpoint(text: str) -> EndpointConfiguration:  # noqa: N802
    """Return the :py:class:`EndpointConfiguration` of a remote endpoint.

    A value containing a slash is the path of a UNIX domain socket
    (``AF_UNIX``); anything else must be ``host:port`` (``AF_INET``), split at
    the first colon, with the port parsed like :py:func:`Integer`.
    """
    if not text:
        raise ValueError("no endpoint specified")

    if "/" in text:
        return EndpointConfiguration(socket.AF_UNIX, text)

    host, colon, port_text = text.partition(":")
    if not colon:
        raise ValueError("no port specified")
    return EndpointConfiguration(socket.AF_INET, InternetAddress(host, int(port_text)))


def Base64(text: str) -> bytes:  # noqa: N802
    """Return the bytes encoded by a base64 string (non-alphabet characters are ignored)."""
    if not text:
        raise ValueError("expected base64 encoded data")

    try:
        return base64.b64decode(text)
    except TypeError as exc:
        raise ValueError(*exc.args)


def File(mode: str = "r") -> Callable[[str], IO[Any]]:  # noqa: N802
    """Return a parser that opens the file at the given path.

    The file is opened with :py:func:`open` using ``mode`` and the UTF-8
    encoding (so binary modes are rejected by :py:func:`open` itself).  A
    path that cannot be opened is an error.

    :param mode: The mode to open the file in, as for :py:func:`open`.
    """

    def open_file(text: str) -> IO[Any]:
        try:
            return open(text, mode=mode, encoding="UTF-8")  # pylint: disable=consider-using-with
        except OSError:
            raise ValueError(f"could not open file: {text}")

    return open_file


# --------------------------------------------------------------------------
# Time spans and percentages
# --------------------------------------------------------------------------

# Seconds per unit.  The millisecond factor is deliberately the float 0.001:
# the count is multiplied by it, exactly as the reference implementation does.
_SECONDS_PER_UNIT: Dict[str, Union[int, float]] = {
    "millisecond": 0.001,
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
}


def Timespan(text: str) -> datetime.timedelta:  # noqa: N802
    """Return the :py:class:`datetime.timedelta` of a span such as ``"3 days"``.

    The value is a whole number and a unit separated by whitespace.  Units are
    ``millisecond``, ``second``, ``minute``, ``hour`` and ``day``; every
    trailing ``s`` is removed from the unit, so plurals are accepted.
    """
    words = text.split()
    if len(words) != 2:
        raise ValueError("invalid specification")

    count = int(words[0])
    unit = words[1].rstrip("s")
    try:
        factor = _SECONDS_PER_UNIT[unit]
    except KeyError:
        raise ValueError("unknown unit")
    return datetime.timedelta(seconds=count * factor)


def TimespanWithLegacyFallback(text: str) -> datetime.timedelta:  # noqa: N802
    """Return a :py:func:`Timespan`, or else a plain number of seconds such as ``"1.5"``."""
    try:
        return Timespan(text)
    except ValueError:
        return datetime.timedelta(seconds=Float(text))


InfiniteTimespanType = NewType("InfiniteTimespanType", object)
#: The value :py:func:`TimespanOrInfinite` returns for ``"infinite"``.
InfiniteTimespan = InfiniteTimespanType(object())


def TimespanOrInfinite(  # noqa: N802
    text: str,
) -> Union[datetime.timedelta, InfiniteTimespanType]:
    """Return :py:data:`InfiniteTimespan` for exactly ``"infinite"``, else a :py:func:`Timespan`."""
    if text == "infinite":
        return InfiniteTimespan
    return Timespan(text)


def Percent(text: str) -> float:  # noqa: N802
    """Return a percentage such as ``"37.5%"`` as a fraction in ``[0.0, 1.0]``."""
    if not text.endswith("%"):
        raise ValueError("the value is not a percentage")

    fraction = float(text[:-1]) / 100.0
    if not 0 <= fraction <= 1:
        raise ValueError("percentage is out of valid range")
    return fraction


# --------------------------------------------------------------------------
# Unix accounts
# --------------------------------------------------------------------------


def UnixUser(text: str) -> int:  # noqa: N802
    """Return the user ID of a Unix user name, or of a numeric user ID."""
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError as not_found:
        try:
            return int(text)
        except ValueError:
            raise ValueError(not_found) from None


def UnixGroup(text: str) -> int:  # noqa: N802
    """Return the group ID of a Unix group name, or of a numeric group ID."""
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError as not_found:
        try:
            return int(text)
        except ValueError:
            raise ValueError(not_found) from None


# --------------------------------------------------------------------------
# Parser combinators
# --------------------------------------------------------------------------


def OneOf(**options: T) -> Callable[[str], T]:  # noqa: N802
    """Return a parser that maps each option name to its value.

    ``OneOf(hearts="H", spades="S")`` parses ``"hearts"`` into ``"H"``; any
    other value (names are case-sensitive) is an error.
    """

    def one_of(text: str) -> T:
        try:
            return options[text]
        except KeyError:
            raise ValueError(f"expected one of {options.keys()!r}")

    return one_of


def TupleOf(item_parser: Callable[[str], T]) -> Callable[[str], Sequence[T]]:  # noqa: N802
    """Return a parser for a comma-separated list of items.

    Items are stripped of surrounding whitespace, empty items are dropped and
    the rest are parsed with ``item_parser``; the result is a :py:class:`list`.
    An empty value is an error (wrap with :py:func:`Optional` to allow it).
    """

    def tuple_of(text: str) -> Sequence[T]:
        if not text:
            raise ValueError("no values provided")
        items = (piece.strip() for piece in text.split(","))
        return [item_parser(item) for item in items if item]

    return tuple_of


def DefaultFromEnv(  # noqa: N802
    item_parser: Callable[[str], T],
    default_src: str,
    fallback: typing.Optional[T] = None,
) -> Callable[[str], typing.Optional[T]]:
    """Return a parser whose default comes from an environment variable.

    The variable named ``default_src`` is read (and parsed with
    ``item_parser``) when this function is called, not when the option is
    parsed; if it is unset or empty, ``fallback`` is the default.  An empty
    option value yields the default.  A false result (an empty default, or
    a value that parses to ``0``, ``False``, ...) is an error.
    """
    default = Optional(item_parser, fallback)(os.getenv(default_src) or "")

    def default_from_env(text: str) -> typing.Optional[T]:
        value = Optional(item_parser, default)(text)
        if not value:
            raise ValueError("no value provided")
        return value

    return default_from_env


def Optional(  # noqa: N802
    item_parser: Callable[[str], T], default: typing.Optional[T] = None
) -> Callable[[str], typing.Optional[T]]:
    """Return a parser yielding ``default`` for an empty value, else ``item_parser``'s result."""

    def optional(text: str) -> typing.Optional[T]:
        if not text:
            return default
        return item_parser(text)

    return optional


def Fallback(  # noqa: N802
    primary_parser: Callable[[str], T], fallback_parser: Callable[[str], T]
) -> Callable[[str], T]:
    """Return a parser trying ``primary_parser``, then ``fallback_parser`` on :py:exc:`ValueError`.

    This is useful for backwards-compatible configuration changes.  Other
    exception types raised by ``primary_parser`` are not caught.
    """

    def fallback(text: str) -> T:
        try:
            return primary_parser(text)
        except ValueError:
            return fallback_parser(text)

    return fallback


# --------------------------------------------------------------------------
# Structured parsing
# --------------------------------------------------------------------------


class ConfigNamespace(dict):  # type: ignore[type-arg]
    """A dictionary of parsed options whose items are also attributes.

    ``cfg.name`` and ``cfg["name"]`` are the same value.  Reading a missing
    attribute returns ``None`` (reading a missing item raises
    :py:exc:`KeyError`), and setting an attribute sets the item.
    """

    def __init__(self) -> None:
        super().__init__()
        self.__dict__ = self

    def __getattr__(self, name: str) -> Any:
        """Return ``None`` for attributes that are neither items nor dict methods."""
        return None


ConfigSpecItem = Union["Parser", Dict[str, Any], Callable[[str], T]]
ConfigSpec = Dict[str, ConfigSpecItem]
RawConfig = Dict[str, str]


class Parser(Generic[T]):
    """Base class for the parsers of a spec item."""

    @staticmethod
    def from_spec(spec: "ConfigSpecItem[Any]") -> "Parser[Any]":
        """Return the parser for a spec item.

        A :py:class:`Parser` is returned as is, a dictionary becomes a
        :py:class:`SpecParser` and any other callable a
        :py:class:`CallableParser`.  Anything else raises
        :py:exc:`AssertionError`.
        """
        if isinstance(spec, Parser):
            return spec
        if isinstance(spec, dict):
            return SpecParser(spec)
        if callable(spec):
            return CallableParser(spec)
        raise AssertionError(f"invalid specification: {spec!r}")

    def parse(self, key_path: str, raw_config: RawConfig) -> T:
        """Parse and return the value found at ``key_path``.

        :param key_path: The dotted name of the option (``""`` for the root).
        :param raw_config: The whole raw configuration dictionary.
        """
        raise NotImplementedError


class SpecParser(Parser[ConfigNamespace]):
    """Parse a nested spec (a dictionary of spec items) into a namespace."""

    def __init__(self, spec: ConfigSpec):
        self.spec = spec

    def parse(self, key_path: str, raw_config: RawConfig) -> ConfigNamespace:
        """Parse every key of the spec, below ``key_path``, in spec order."""
        result = ConfigNamespace()
        for name, item in self.spec.items():
            assert "." not in name, "dots are not allowed in keys"
            child_path = f"{key_path}.{name}" if key_path else name
            result[name] = Parser.from_spec(item).parse(child_path, raw_config)
        return result


class CallableParser(Parser[T]):
    """Parse one option with a plain callable such as :py:func:`Integer`.

    A missing option is passed to the callable as ``""``.  Any
    :py:exc:`Exception` the callable raises is re-raised as a
    :py:exc:`ConfigurationError` naming the option.
    """

    def __init__(self, callable_: Callable[[str], T]):
        self.callable = callable_

    def parse(self, key_path: str, raw_config: RawConfig) -> T:
        """Parse the option ``key_path`` of ``raw_config``."""
        text = raw_config.get(key_path, "")
        try:
            return self.callable(text)
        except Exception as exc:  # pylint: disable=broad-except
            raise ConfigurationError(key_path, exc)


class DictOf(Parser[ConfigNamespace]):
    """A group of options whose names are not known in advance.

    Every distinct name ``<sub>`` for which an option ``<key_path>.<sub>`` or
    ``<key_path>.<sub>.<more>`` exists becomes an item of the result, parsed
    by ``spec`` at ``<key_path>.<sub>``; items follow the order of the raw
    configuration.  For example ``DictOf(Integer)`` over ``population.cn`` and
    ``population.us``, or ``DictOf({"population": Integer, "capital": String})``
    over ``countries.cn.population``, ``countries.cn.capital``, ...

    :param spec: The spec item each member is parsed with.
    """

    def __init__(self, spec: "ConfigSpecItem[Any]"):
        self.subparser = Parser.from_spec(spec)

    def parse(self, key_path: str, raw_config: RawConfig) -> ConfigNamespace:
        """Parse every member found below ``key_path``."""
        prefix = f"{key_path}." if key_path else ""
        # Only the dots of the prefix are escaped: other characters keep their
        # regular-expression meaning, as in the reference implementation.
        member_name = re.compile("^" + prefix.replace(".", r"\.") + r"([^.]+)")

        members = ConfigNamespace()
        done: Set[str] = set()
        for raw_key in raw_config:
            match = member_name.search(raw_key)
            if match is None:
                continue
            name = match.group(1)
            if name in done:
                continue
            members[name] = self.subparser.parse(prefix + name, raw_config)
            done.add(name)
        return members


def parse_config(config: RawConfig, spec: ConfigSpec) -> ConfigNamespace:
    """Parse a raw configuration against a spec.

    :param config: The raw configuration: option names to string values.
    :param spec: The spec the configuration must satisfy.
    :raises ConfigurationError: An option violates the spec.
    :return: The parsed configuration.
    """
    parsed: ConfigNamespace = Parser.from_spec(spec).parse("", config)
    return parsed
