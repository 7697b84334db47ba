"""Tests of ``baseplate_serve.config`` (``baseplate.config`` / ``baseplate.lib.config``).

Most cases come from ``tests/vectors/config_vectors.json``: every vector names
a parser (with its constructor arguments), an input and the outcome that
baseplate.py 2.7's ``baseplate.lib.config`` produces for it.  The schema is
described in ``tests/vectors/README.md``; the helpers below build parsers from
vectors and encode results in that schema.
"""
import ast
import binascii
import configparser
import copy
import datetime
import functools
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import socket
import subprocess
import sys

from typing import Any
from typing import Callable
from typing import Dict
from typing import List

import pytest

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import baseplate_serve.config as config


REPO = pathlib.Path(__file__).resolve().parents[2]
VECTORS_PATH = REPO / "tests" / "vectors" / "config_vectors.json"

# Hypothesis keeps no example database: the tests leave nothing in the tree.
PROPERTIES = settings(database=None, max_examples=300, deadline=None)


# --------------------------------------------------------------------------
# Vector helpers (schema: tests/vectors/README.md)
# --------------------------------------------------------------------------

# Parsers used as they are (plain functions of one string).
PLAIN_PARSERS = {
    "String",
    "Float",
    "Boolean",
    "Endpoint",
    "Base64",
    "Timespan",
    "TimespanWithLegacyFallback",
    "TimespanOrInfinite",
    "Percent",
    "UnixUser",
    "UnixGroup",
}

# Exception types that are not builtins, by their name in the vectors.
QUALIFIED_ERRORS = {
    "binascii.Error": binascii.Error,
    "re.error": re.error,
}


def decode_value(module: Any, value: Any) -> Any:
    """Turn a JSON value of the vector schema into the Python value it stands for."""
    if isinstance(value, list):
        return [decode_value(module, item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, payload),) = value.items()
            if tag == "$timedelta":
                return datetime.timedelta(**payload)
            if tag == "$bytes":
                return bytes.fromhex(payload)
            if tag == "$float":
                return float(payload)
            if tag == "$infinite":
                return module.InfiniteTimespan
            assert not tag.startswith("$"), f"unknown tag {tag}"
        return {key: decode_value(module, item) for key, item in value.items()}
    return value


def encode_value(module: Any, value: Any) -> Any:
    """Turn a parser's result into its JSON form in the vector schema."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": repr(value)}
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, datetime.timedelta):
        return {
            "$timedelta": {
                "days": value.days,
                "seconds": value.seconds,
                "microseconds": value.microseconds,
            }
        }
    if value is module.InfiniteTimespan:
        return {"$infinite": True}
    if isinstance(value, module.EndpointConfiguration):
        address = value.address
        if isinstance(address, module.InternetAddress):
            address = {"host": address.host, "port": address.port}
        return {"$endpoint": {"family": value.family.name, "address": address}}
    if isinstance(value, io.TextIOBase):
        with value:
            described = {"name": value.name, "mode": value.mode, "encoding": value.encoding}
            if value.readable():
                described["read"] = value.read()
        return {"$file": described}
    if isinstance(value, module.ConfigNamespace):
        return {key: encode_value(module, item) for key, item in value.items()}
    if isinstance(value, list):
        return [encode_value(module, item) for item in value]
    raise AssertionError(f"no encoding for {value!r}")


def build_spec(module: Any, node: Dict[str, Any]) -> Any:
    """Build a spec item: a parser reference, ``{"spec": ...}`` or ``{"literal": ...}``."""
    if "spec" in node:
        return {key: build_spec(module, child) for key, child in node["spec"].items()}
    if "literal" in node:
        return node["literal"]
    return build_parser(module, node)


def build_parser(module: Any, ref: Dict[str, Any]) -> Any:
    """Build the parser a ``{"parser": ..., "args": ...}`` reference describes."""
    name = ref["parser"]
    args = ref.get("args", {})
    if name in PLAIN_PARSERS:
        assert not args
        return getattr(module, name)
    if name == "Integer":
        return module.Integer(base=args["base"]) if "base" in args else module.Integer
    if name == "File":
        return module.File(**args)
    if name == "OneOf":
        options = {key: decode_value(module, value) for key, value in args["options"].items()}
        return module.OneOf(**options)
    if name == "TupleOf":
        return module.TupleOf(build_parser(module, args["item"]))
    if name == "Optional":
        item = build_parser(module, args["item"])
        if "default" in args:
            return module.Optional(item, decode_value(module, args["default"]))
        return module.Optional(item)
    if name == "Fallback":
        return module.Fallback(
            build_parser(module, args["primary"]), build_parser(module, args["fallback"])
        )
    if name == "DefaultFromEnv":
        item = build_parser(module, args["item"])
        if "fallback" in args:
            return module.DefaultFromEnv(
                item, args["env_var"], decode_value(module, args["fallback"])
            )
        return module.DefaultFromEnv(item, args["env_var"])
    if name == "DictOf":
        return module.DictOf(build_spec(module, args["item"]))
    if name == "parse_config":
        spec = build_spec(module, args["spec"])
        return lambda raw: module.parse_config(raw, spec)
    if name == "Parser.parse":
        parser = module.Parser.from_spec(build_spec(module, args["spec"]))
        return functools.partial(parser.parse, args["key_path"])
    raise AssertionError(f"unknown parser {name}")


def error_type_name(module: Any, exc_type: type) -> str:
    """Name an exception type the way the vectors do."""
    if exc_type is module.ConfigurationError:
        return "ConfigurationError"
    for name, known in QUALIFIED_ERRORS.items():
        if exc_type is known:
            return name
    assert exc_type.__module__ == "builtins", exc_type
    return exc_type.__name__


def describe_error(module: Any, exc: BaseException, stage: str) -> Dict[str, Any]:
    """Describe an exception as the error fields of a vector."""
    outcome: Dict[str, Any] = {
        "error": str(exc),
        "error_type": error_type_name(module, type(exc)),
    }
    if stage != "parse":
        outcome["error_stage"] = stage
    if isinstance(exc, module.ConfigurationError):
        outcome["error_key"] = exc.key
        outcome["error_cause"] = str(exc.error)
        outcome["error_cause_type"] = error_type_name(module, type(exc.error))
    return outcome


def run_vector(
    module: Any, vector: Dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Dict[str, Any]:
    """Run one vector against ``module`` and return its outcome fields."""
    for name, value in vector.get("env", {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    try:
        parser = build_parser(module, vector)
    except Exception as exc:  # pylint: disable=broad-except
        return describe_error(module, exc, "construct")
    try:
        result = parser(vector["input"])
    except Exception as exc:  # pylint: disable=broad-except
        return describe_error(module, exc, "parse")
    return {"ok": encode_value(module, result)}


OUTCOME_FIELDS = (
    "ok",
    "error",
    "error_type",
    "error_stage",
    "error_key",
    "error_cause",
    "error_cause_type",
)


def expected_outcome(vector: Dict[str, Any]) -> Dict[str, Any]:
    """Return the outcome fields a vector expects."""
    return {field: vector[field] for field in OUTCOME_FIELDS if field in vector}


def canonical(outcome: Dict[str, Any]) -> str:
    """Serialize an outcome so that 1, 1.0, True, 0.0 and -0.0 all differ."""
    return json.dumps(outcome, ensure_ascii=True)


def load_vectors() -> List[Dict[str, Any]]:
    """Load the vector table."""
    with open(VECTORS_PATH, encoding="utf-8") as vectors_file:
        return json.load(vectors_file)


VECTORS = load_vectors()


# --------------------------------------------------------------------------
# The vector table
# --------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_vector(vector: Dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    expected = expected_outcome(vector)
    actual = run_vector(config, vector, monkeypatch)
    assert actual == expected
    assert canonical(actual) == canonical(expected)

    if vector["parser"] == "Integer":
        # The direct call form gives the same outcome as the parser form.
        base = vector.get("args", {}).get("base", 10)
        try:
            direct = {"ok": config.Integer(vector["input"], base=base)}
        except Exception as exc:  # pylint: disable=broad-except
            direct = describe_error(config, exc, "parse")
        assert canonical(direct) == canonical(expected)


def test_vector_table_is_well_formed() -> None:
    ids = [vector["id"] for vector in VECTORS]
    assert len(ids) == len(set(ids))
    allowed = {"id", "parser", "args", "input", "env", "tags", "note", *OUTCOME_FIELDS}
    for vector in VECTORS:
        assert set(vector) <= allowed, vector["id"]
        assert ("ok" in vector) != ("error" in vector), vector["id"]
        assert ("error" in vector) == ("error_type" in vector), vector["id"]
        # "error_stage" is only written for errors raised while building the parser.
        assert vector.get("error_stage", "construct") == "construct", vector["id"]
        assert ("error_key" in vector) == (vector.get("error_type") == "ConfigurationError")


def test_vector_table_covers_every_parser() -> None:
    parsers_used = set()

    def collect(ref: Dict[str, Any]) -> None:
        if "spec" in ref:
            for child in ref["spec"].values():
                collect(child)
            return
        if "parser" not in ref:
            return
        parsers_used.add(ref["parser"])
        for arg in ref.get("args", {}).values():
            if isinstance(arg, dict) and ("parser" in arg or "spec" in arg):
                collect(arg)

    for vector in VECTORS:
        collect(vector)
    assert parsers_used >= PLAIN_PARSERS | {
        "Integer",
        "File",
        "OneOf",
        "TupleOf",
        "Optional",
        "Fallback",
        "DefaultFromEnv",
        "DictOf",
        "parse_config",
        "Parser.parse",
    }
    assert len(VECTORS) >= 500


# --------------------------------------------------------------------------
# Module surface
# --------------------------------------------------------------------------

# Every public name of baseplate.py's baseplate/lib/config.py (it has no
# __all__; standard-library imports excluded).
REFERENCE_NAMES = [
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
    "T",
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


def test_public_names() -> None:
    import baseplate.config
    import baseplate.lib.config

    assert set(config.__all__) == set(REFERENCE_NAMES) - {"T"}
    for module in (baseplate.config, baseplate.lib.config):
        assert module.__all__ == config.__all__
        for name in REFERENCE_NAMES:
            assert getattr(module, name) is getattr(config, name), name


def test_imports_only_the_standard_library(tmp_path: pathlib.Path) -> None:
    source = (REPO / "python" / "baseplate_serve" / "config.py").read_text(encoding="utf-8")
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported == {
        "base64",
        "datetime",
        "functools",
        "grp",
        "os",
        "pwd",
        "re",
        "socket",
        "typing",
    }

    # And it imports in an isolated interpreter without site-packages.
    (tmp_path / "standalone_config.py").write_text(source, encoding="utf-8")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import standalone_config as c; "
        "print(c.Timespan('1 seconds').total_seconds())"
    )
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout == "1.0\n"


# --------------------------------------------------------------------------
# ConfigurationError and ConfigNamespace
# --------------------------------------------------------------------------


def test_configuration_error() -> None:
    cause = ValueError("bad")
    error = config.ConfigurationError("a.b", cause)
    assert str(error) == "a.b: bad"
    assert error.args == ("a.b: bad",)
    assert error.key == "a.b"
    assert error.error is cause
    assert isinstance(error, Exception)
    assert str(config.ConfigurationError("key", "message")) == "key: message"


def test_config_namespace_attribute_and_item_access() -> None:
    namespace = config.ConfigNamespace()
    namespace["port"] = 8080
    namespace.host = "localhost"
    assert namespace.port == namespace["port"] == 8080
    assert namespace["host"] == namespace.host == "localhost"
    assert namespace == {"port": 8080, "host": "localhost"}
    assert isinstance(namespace, dict)
    assert vars(namespace) is namespace


def test_config_namespace_missing_names() -> None:
    namespace = config.ConfigNamespace()
    # A missing attribute reads as None (it does not raise AttributeError) ...
    assert namespace.missing is None
    assert hasattr(namespace, "anything")
    assert getattr(namespace, "missing", "default") is None
    # ... but a missing item raises KeyError.
    with pytest.raises(KeyError):
        namespace["missing"]  # pylint: disable=pointless-statement
    with pytest.raises(TypeError):
        config.ConfigNamespace(a=1)  # type: ignore[call-arg]


def test_config_namespace_items_shadow_dict_methods() -> None:
    namespace = config.ConfigNamespace()
    namespace["keys"] = "a value"
    assert namespace.keys == "a value"
    assert namespace["keys"] == "a value"
    assert list(dict.keys(namespace)) == ["keys"]


def test_config_namespace_cannot_be_copied() -> None:
    namespace = config.ConfigNamespace()
    namespace["a"] = 1
    # The lookup of __setstate__ falls through to __getattr__, which yields None.
    for duplicate in (copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="'NoneType' object is not callable"):
            duplicate(namespace)
    assert dict(namespace) == {"a": 1}


# --------------------------------------------------------------------------
# parse_config
# --------------------------------------------------------------------------

RAW = {
    "simple": "oink",
    "foo.bar": "33",
    "foo.baz": "a cool guy",
    "noo.bar": "",
    "deep.so.deep": "very",
}


def test_parse_config_nested_specs_and_dotted_keys() -> None:
    result = config.parse_config(
        RAW,
        {
            "simple": config.String,
            "foo": {"bar": config.Integer},
            "noo": {"bar": config.Optional(config.String, default="")},
            "deep": {"so": {"deep": config.String}},
        },
    )
    assert result == {
        "simple": "oink",
        "foo": {"bar": 33},
        "noo": {"bar": ""},
        "deep": {"so": {"deep": "very"}},
    }
    assert result.simple == "oink"
    assert result.foo.bar == 33
    assert result["foo"]["bar"] == 33
    assert result.noo.bar == ""
    assert result.deep.so.deep == "very"
    assert result.deep["so"].deep == "very"
    for namespace in (result, result.foo, result.noo, result.deep, result.deep.so):
        assert type(namespace) is config.ConfigNamespace
    # Options not in the spec are ignored.
    assert "baz" not in result.foo


def test_parse_config_error_carries_full_key_path() -> None:
    with pytest.raises(config.ConfigurationError) as caught:
        config.parse_config(RAW, {"deep": {"so": {"deep": config.Integer}}})
    assert caught.value.key == "deep.so.deep"
    assert isinstance(caught.value.error, ValueError)
    assert str(caught.value) == "deep.so.deep: invalid literal for int() with base 10: 'very'"


def test_parse_config_missing_option_is_parsed_as_empty() -> None:
    with pytest.raises(config.ConfigurationError) as caught:
        config.parse_config(RAW, {"foo": {"not_here": config.String}})
    assert caught.value.key == "foo.not_here"
    assert str(caught.value) == "foo.not_here: no value specified"
    result = config.parse_config(RAW, {"foo": {"not_here": config.Optional(config.Integer, 5)}})
    assert result.foo.not_here == 5


def test_parse_config_wraps_any_exception_but_not_spec_errors() -> None:
    def broken(text: str) -> str:
        raise KeyError(text)

    with pytest.raises(config.ConfigurationError) as caught:
        config.parse_config(RAW, {"simple": broken})
    assert isinstance(caught.value.error, KeyError)
    assert str(caught.value) == "simple: 'oink'"

    with pytest.raises(AssertionError, match="dots are not allowed in keys"):
        config.parse_config(RAW, {"foo.bar": config.Integer})
    with pytest.raises(AssertionError, match=r"invalid specification: 37"):
        config.parse_config(RAW, {"tree_people": 37})


def test_parse_config_dict_of_nested_keys() -> None:
    raw = {
        "countries.cn.population": "1383890000",
        "countries.cn.capital": "Beijing",
        "countries.br.population": "207645000",
        "countries.br.capital": "Brasília",
        "countries.br.ignored": "x",
        "population.us": "325165000",
        "population.id": "263447000",
    }
    result = config.parse_config(
        raw,
        {
            "countries": config.DictOf({"population": config.Integer, "capital": config.String}),
            "population": config.DictOf(config.Integer),
        },
    )
    assert list(result.countries) == ["cn", "br"]
    assert result.countries.cn.capital == "Beijing"
    assert result.countries["br"].population == 207645000
    assert result.countries.br == {"population": 207645000, "capital": "Brasília"}
    assert result.population == {"us": 325165000, "id": 263447000}
    assert type(result.population) is config.ConfigNamespace


def test_dict_of_parse_with_key_path() -> None:
    parser = config.DictOf(config.Integer)
    assert parser.parse("my_key", {"not_related": "a"}) == {}
    assert parser.parse("my_key", {"my_key.a": "1", "my_key.b": "2"}) == {"a": 1, "b": 2}
    with pytest.raises(config.ConfigurationError) as caught:
        parser.parse("my_key", {"my_key.a.deeper": "1"})
    assert caught.value.key == "my_key.a"
    # Each DictOf descends one level: the innermost parser reads "<a>.<x>".
    nested = config.DictOf(config.DictOf(config.Integer))
    assert nested.parse("", {"a.x": "1", "a.y": "2", "b.z": "3"}) == {
        "a": {"x": 1, "y": 2},
        "b": {"z": 3},
    }
    with pytest.raises(config.ConfigurationError) as too_deep:
        nested.parse("", {"a.x.p": "1"})
    assert too_deep.value.key == "a.x"


def test_parser_classes() -> None:
    spec = {"a": config.Integer}
    dict_of = config.DictOf(config.String)
    assert config.Parser.from_spec(dict_of) is dict_of
    spec_parser = config.Parser.from_spec(spec)
    assert type(spec_parser) is config.SpecParser
    assert spec_parser.spec is spec
    callable_parser = config.Parser.from_spec(config.Integer)
    assert type(callable_parser) is config.CallableParser
    assert callable_parser.callable is config.Integer
    assert type(dict_of.subparser) is config.CallableParser
    assert dict_of.subparser.callable is config.String
    with pytest.raises(NotImplementedError):
        config.Parser().parse("key", {})
    with pytest.raises(AssertionError, match=r"invalid specification: \['a'\]"):
        config.Parser.from_spec(["a"])  # type: ignore[arg-type]

    class Custom(config.Parser[int]):
        def parse(self, key_path: str, raw_config: Dict[str, str]) -> int:
            return len(key_path) + len(raw_config)

    assert config.parse_config({"x": "1"}, {"abc": Custom()}) == {"abc": 4}


# --------------------------------------------------------------------------
# Environment, files, Unix accounts, endpoints
# --------------------------------------------------------------------------


def test_default_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BPS_TEST_DEFAULT", "default")
    monkeypatch.delenv("BPS_TEST_UNSET", raising=False)
    assert config.DefaultFromEnv(config.String, "BPS_TEST_DEFAULT")("") == "default"
    assert config.DefaultFromEnv(config.String, "BPS_TEST_DEFAULT")("foo") == "foo"
    assert config.DefaultFromEnv(config.Integer, "BPS_TEST_UNSET", 5)("") == 5
    with pytest.raises(ValueError, match="^no value provided$"):
        config.DefaultFromEnv(config.String, "BPS_TEST_UNSET")("")


def test_default_from_env_is_read_when_the_parser_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BPS_TEST_DEFAULT", "12")
    parser = config.DefaultFromEnv(config.Integer, "BPS_TEST_DEFAULT")
    monkeypatch.setenv("BPS_TEST_DEFAULT", "34")
    assert parser("") == 12

    monkeypatch.setenv("BPS_TEST_DEFAULT", "not a number")
    with pytest.raises(ValueError, match="invalid literal for int"):
        config.DefaultFromEnv(config.Integer, "BPS_TEST_DEFAULT")

    monkeypatch.setenv("BPS_TEST_DEFAULT", "7")
    result = config.parse_config(
        {}, {"workers": config.DefaultFromEnv(config.Integer, "BPS_TEST_DEFAULT")}
    )
    assert result.workers == 7


def test_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_text("tést", encoding="utf-8")

    with config.File()(str(path)) as opened:
        assert opened.read() == "tést"
        assert opened.encoding == "UTF-8"
        assert opened.mode == "r"

    with config.File(mode="w")(str(path)) as opened:
        opened.write("cool")
    assert path.read_text(encoding="utf-8") == "cool"

    with config.File(mode="a")(str(path)) as opened:
        opened.write("er")
    assert path.read_text(encoding="utf-8") == "cooler"

    missing = tmp_path / "missing.txt"
    with pytest.raises(ValueError) as caught:
        config.File()(str(missing))
    assert str(caught.value) == f"could not open file: {missing}"

    with pytest.raises(ValueError, match=r"^could not open file: "):
        config.File()(str(tmp_path))
    with pytest.raises(ValueError, match=r"^could not open file: "):
        config.File(mode="x")(str(path))
    with pytest.raises(ValueError, match="^binary mode doesn't take an encoding argument$"):
        config.File(mode="rb")(str(path))

    result = config.parse_config({"key": str(path)}, {"key": config.File()})
    with result.key as opened:
        assert opened.read() == "cooler"
    with pytest.raises(config.ConfigurationError) as wrapped:
        config.parse_config({"key": str(missing)}, {"key": config.File()})
    assert str(wrapped.value) == f"key: could not open file: {missing}"


@pytest.mark.parametrize("parser", [config.UnixUser, config.UnixGroup])
def test_unix_user_and_group(parser: Callable[[str], int]) -> None:
    assert parser("root") == 0
    assert parser("0") == 0
    assert parser("1000") == 1000
    assert parser(" 4242 ") == 4242
    with pytest.raises(ValueError) as caught:
        parser("fhqwhgads")
    function = "getpwnam" if parser is config.UnixUser else "getgrnam"
    assert str(caught.value) == f"\"{function}(): name not found: 'fhqwhgads'\""
    assert isinstance(caught.value.args[0], KeyError)
    assert caught.value.__suppress_context__


def test_endpoint_families() -> None:
    inet = config.Endpoint("localhost:1234")
    assert inet.family == socket.AF_INET
    assert inet.address == ("localhost", 1234)
    assert isinstance(inet.address, config.InternetAddress)
    assert inet.address.host == "localhost"
    assert inet.address.port == 1234
    assert str(inet) == str(inet.address) == "localhost:1234"
    assert inet == (socket.AF_INET, ("localhost", 1234))
    assert config.EndpointConfiguration._fields == ("family", "address")
    assert config.InternetAddress._fields == ("host", "port")

    unix = config.Endpoint("/run/app.sock")
    assert unix.family == socket.AF_UNIX
    assert unix.address == "/run/app.sock"
    assert str(unix) == "/run/app.sock"
    # A slash anywhere makes it a path, even after a colon.
    assert config.Endpoint("host:/8080").family == socket.AF_UNIX


def test_integer_call_forms() -> None:
    assert config.Integer("337") == 337
    assert config.Integer("1f", base=16) == 31
    assert config.Integer(text="0600", base=8) == 384
    hexadecimal = config.Integer(base=16)
    assert isinstance(hexadecimal, functools.partial)
    assert hexadecimal("0x1F") == 31
    assert config.Integer()("42") == 42  # type: ignore[operator]
    assert config.parse_config({"mask": "0o22"}, {"mask": config.Integer(base=0)}) == {
        "mask": 18
    }


def test_infinite_timespan_sentinel() -> None:
    import baseplate.config
    import baseplate.lib.config

    assert config.TimespanOrInfinite("infinite") is config.InfiniteTimespan
    assert baseplate.lib.config.TimespanOrInfinite("infinite") is baseplate.config.InfiniteTimespan
    assert config.TimespanOrInfinite("2 days") == datetime.timedelta(days=2)


def test_parser_exceptions_are_value_errors_where_fallback_relies_on_it() -> None:
    # Fallback only catches ValueError: an OverflowError from the primary parser escapes.
    parser = config.Fallback(config.Timespan, config.Integer)
    assert parser("30") == 30
    with pytest.raises(OverflowError):
        parser("1000000000 days")
    # binascii.Error is a ValueError, so Base64 can be the primary parser.
    assert config.Fallback(config.Base64, config.String)("YQ=") == "YQ="


def test_example_app() -> None:
    example = REPO / "examples" / "config_app"
    ini = configparser.RawConfigParser()
    assert ini.read(example / "app.ini", encoding="utf-8")
    assert ini.get("server:main", "factory") == "baseplate.server.wsgi"
    assert ini.get("app:main", "factory") == "app:make_app"
    module_spec = importlib.util.spec_from_file_location("config_example_app", example / "app.py")
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)

    raw = dict(ini.items("app:main"))
    app = module.make_app(raw)
    responses = []
    body = b"".join(
        app(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
            lambda status, headers: responses.append((status, headers)),
        )
    )
    assert responses == [
        ("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    ]
    assert json.loads(body) == {
        "greeting": "hello from app.ini",
        "workers": 4,
        "cache": {"ttl": 300.0, "size": 1024},
        "timeouts": {"read": 0.25, "idle": 30},
        "backends": [
            {"family": "AF_INET", "address": "alpha:9090"},
            {"family": "AF_INET", "address": "beta:9091"},
            {"family": "AF_UNIX", "address": "/run/gamma.sock"},
        ],
        "tags": ["blue", "green"],
        "sample_rate": 0.125,
        "quotas": {"free": 10, "paid": 1000},
    }

    for optional in ("greeting", "tags", "sample_rate"):
        del raw[optional]
    raw["timeouts.idle"] = "2 minutes"
    defaults = json.loads(b"".join(module.make_app(raw)({}, lambda status, headers: None)))
    assert defaults["greeting"] == "hello"
    assert defaults["tags"] == []
    assert defaults["sample_rate"] == 1.0
    assert defaults["timeouts"]["idle"] == 120.0

    raw["timeouts.read"] = "250 ms"
    with pytest.raises(config.ConfigurationError, match=r"^timeouts\.read: unknown unit$"):
        module.make_app(raw)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

WHITESPACE = st.text(alphabet=" \t\n\r\f\v", max_size=3)
UNITS = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600, "day": 86400}


@PROPERTIES
@given(number=st.integers(), before=WHITESPACE, after=WHITESPACE)
def test_integer_property(number: int, before: str, after: str) -> None:
    assert config.Integer(f"{before}{number}{after}") == number
    assert config.Integer(base=16)(f"{number:#x}") == number
    assert config.Integer(base=16)(f"{number:x}") == number
    assert config.Integer(base=0)(f"{number:#o}") == number
    assert config.Integer(base=2)(f"{number:b}") == number


@PROPERTIES
@given(number=st.floats(allow_nan=False, allow_infinity=False))
def test_integer_rejects_non_whole_numbers(number: float) -> None:
    with pytest.raises(ValueError, match=r"^invalid literal for int\(\) with base 10: "):
        config.Integer(repr(number))


@PROPERTIES
@given(
    count=st.integers(min_value=-(10**6), max_value=10**6),
    unit=st.sampled_from(sorted(UNITS)),
    plural=st.integers(min_value=0, max_value=3),
    gap=st.text(alphabet=" \t\n", min_size=1, max_size=3),
    edge=WHITESPACE,
)
def test_timespan_property(count: int, unit: str, plural: int, gap: str, edge: str) -> None:
    text = f"{edge}{count}{gap}{unit}{'s' * plural}{edge}"
    expected = datetime.timedelta(seconds=count * UNITS[unit])
    assert config.Timespan(text) == expected
    assert config.TimespanWithLegacyFallback(text) == expected
    assert config.TimespanOrInfinite(text) == expected


@PROPERTIES
@given(
    count=st.integers(min_value=-(10**8), max_value=10**8),
    unit=st.text(alphabet="abcdehilmnorstuy", max_size=12),
)
def test_timespan_units_property(count: int, unit: str) -> None:
    text = f"{count} {unit}"
    if unit.rstrip("s") in UNITS:
        assert config.Timespan(text) == datetime.timedelta(seconds=count * UNITS[unit.rstrip("s")])
    else:
        with pytest.raises(ValueError):
            config.Timespan(text)


@PROPERTIES
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_percent_property(value: float) -> None:
    text = f"{value!r}%"
    fraction = value / 100.0
    if 0 <= fraction <= 1:
        result = config.Percent(text)
        assert result == fraction
        assert 0.0 <= result <= 1.0
    else:
        with pytest.raises(ValueError, match="^percentage is out of valid range$"):
            config.Percent(text)
    with pytest.raises(ValueError, match="^the value is not a percentage$"):
        config.Percent(repr(value))


@PROPERTIES
@given(value=st.integers(min_value=0, max_value=100))
def test_whole_percents_property(value: int) -> None:
    assert config.Percent(f"{value}%") == value / 100.0
    assert config.Fallback(config.Percent, config.Float)(str(value)) == float(value)


@PROPERTIES
@given(
    numbers=st.lists(st.integers(), max_size=8),
    pads=st.lists(WHITESPACE, min_size=18, max_size=18),
    empties=st.lists(st.booleans(), min_size=9, max_size=9),
)
def test_tuple_of_property(numbers: List[int], pads: List[str], empties: List[bool]) -> None:
    pieces = []
    for index, number in enumerate(numbers):
        if empties[index]:
            pieces.append(pads[2 * index + 1])  # an empty item: dropped
        pieces.append(f"{pads[2 * index]}{number}{pads[2 * index + 1]}")
    text = ",".join(pieces)
    if not text:
        with pytest.raises(ValueError, match="^no values provided$"):
            config.TupleOf(config.Integer)(text)
    else:
        assert config.TupleOf(config.Integer)(text) == numbers
        assert config.TupleOf(config.String)(text) == [str(number) for number in numbers]


@PROPERTIES
@given(text=st.text(alphabet="ab ,\t", max_size=12))
def test_tuple_of_strings_property(text: str) -> None:
    if not text:
        with pytest.raises(ValueError):
            config.TupleOf(config.String)(text)
        return
    expected = [item.strip() for item in text.split(",") if item.strip()]
    assert config.TupleOf(config.String)(text) == expected
    assert config.Optional(config.TupleOf(config.String), default=[])(text) == expected


@PROPERTIES
@given(
    raw=st.dictionaries(
        keys=st.from_regex(r"\A[ab]{1,2}(\.[ab]{1,2}){0,2}\Z"),
        values=st.sampled_from(["1", "2", ""]),
        max_size=8,
    )
)
def test_dict_of_groups_by_first_segment(raw: Dict[str, str]) -> None:
    result = config.DictOf(config.DictOf(config.Optional(config.Integer))).parse("", raw)
    first_segments = list(dict.fromkeys(key.split(".")[0] for key in raw))
    assert list(result) == first_segments
    for first, members in result.items():
        expected = dict.fromkeys(
            key.split(".")[1] for key in raw if key.startswith(first + ".")
        )
        assert list(members) == list(expected)


def test_environment_untouched_by_vectors() -> None:
    # The vectors set variables through monkeypatch only.
    assert not [name for name in os.environ if name.startswith("BPS_VECTOR_")]
