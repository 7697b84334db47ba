"""``baseplate.config`` and ``baseplate.lib.config`` beside reddit's baseplate.py.

This project ships ``baseplate/config.py`` and ``baseplate/lib/config.py`` as
*namespace-package portions*: there is no ``baseplate/__init__.py`` nor
``baseplate/lib/__init__.py``.  The tests install the package files for real
(into the site-packages of a fresh virtual environment, or into directories on
``PYTHONPATH``) next to a stand-in for reddit's baseplate.py, a *regular*
package whose ``__init__.py`` does ``from baseplate.lib import config`` like
the real one, and check in a fresh interpreter what gets imported.

What happens (and what the assertions pin down):

* This package alone: both ``from baseplate import config`` and
  ``from baseplate.lib import config`` give the re-exports of
  ``baseplate_serve.config``.
* The stand-in in another ``sys.path`` entry, in either order: the regular
  package wins outright, because a regular package found anywhere on the path
  takes precedence over namespace portions.  Both imports give the
  stand-in's ``baseplate.lib.config``, and this project's ``baseplate``
  files are not used at all.
* Both installed into the *same* site-packages: the directories merge.  The
  regular package's ``__init__.py`` makes ``baseplate`` a regular package; the
  one file path both provide, ``baseplate/lib/config.py``, holds whichever
  was installed last, and ``from baseplate import config`` gives the module
  that ``baseplate/__init__.py`` bound to that name, i.e. the same
  ``baseplate.lib.config``.  Only an explicit ``import baseplate.config``
  loads this project's ``baseplate/config.py`` from the merged directory
  (with a separate stand-in directory that import fails instead).
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import venv

from typing import Any
from typing import Dict
from typing import List

import pytest


REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = REPO / "python"

STAND_IN_INIT = '''"""Stand-in for reddit's baseplate.py: a regular package."""
from baseplate.lib import config
'''
STAND_IN_LIB_INIT = '"""Stand-in for baseplate.lib."""\n'
STAND_IN_CONFIG = '''"""Stand-in for baseplate.lib.config."""
ORIGIN = "stand-in"


def Integer(text):
    return int(text)
'''

# Run in the interpreter under test: report what the imports resolve to.
PROBE = r"""
import json
import sys

roots = json.loads(sys.argv[1])


def where(path):
    if path is None:
        return None
    for label, root in roots.items():
        if path.startswith(root):
            return label + path[len(root):]
    return "elsewhere:" + path


def describe(module):
    described = {"name": module.__name__, "file": where(module.__file__)}
    described["origin"] = getattr(module, "ORIGIN", None)
    try:
        import baseplate_serve.config as ours
    except ImportError:
        described["is_baseplate_serve"] = False
    else:
        described["is_baseplate_serve"] = getattr(module, "Integer", None) is ours.Integer
    return described


report = {}
import baseplate

report["baseplate"] = {
    "file": where(getattr(baseplate, "__file__", None)),
    "path": [where(entry) for entry in baseplate.__path__],
}
for statement in ("from baseplate import config", "from baseplate.lib import config"):
    scope = {}
    try:
        exec(statement, scope)
    except ImportError as exc:
        report[statement] = {"error": type(exc).__name__ + ": " + str(exc)}
    else:
        module = scope["config"]
        report[statement] = describe(module)
        report[statement]["cfg"] = None
        if hasattr(module, "parse_config"):
            cfg = module.parse_config(
                {"port": "0x1F", "wait": "2 seconds"},
                {"port": module.Integer(base=16), "wait": module.Timespan},
            )
            report[statement]["cfg"] = [cfg.port, cfg.wait.total_seconds()]
# Last, the explicit submodule import, which looks for a baseplate/config.py file.
try:
    import importlib

    report["import baseplate.config"] = describe(importlib.import_module("baseplate.config"))
except ImportError as exc:
    report["import baseplate.config"] = {"error": type(exc).__name__ + ": " + str(exc)}
print(json.dumps(report, sort_keys=True))
"""


def copy_tree(source: pathlib.Path, target: pathlib.Path) -> None:
    """Copy the Python files of ``source`` into ``target`` (overwriting, like an install)."""
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def install_this_package(site: pathlib.Path) -> None:
    """Install this project's pure-Python configuration files into ``site``."""
    package = site / "baseplate_serve"
    package.mkdir(parents=True, exist_ok=True)
    # An empty stand-in: the real package __init__ is irrelevant here.
    (package / "__init__.py").write_text("", encoding="utf-8")
    shutil.copyfile(SOURCES / "baseplate_serve" / "config.py", package / "config.py")
    copy_tree(SOURCES / "baseplate", site / "baseplate")


def install_stand_in(site: pathlib.Path) -> None:
    """Install the stand-in for reddit's baseplate.py into ``site``."""
    lib = site / "baseplate" / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (site / "baseplate" / "__init__.py").write_text(STAND_IN_INIT, encoding="utf-8")
    (lib / "__init__.py").write_text(STAND_IN_LIB_INIT, encoding="utf-8")
    (lib / "config.py").write_text(STAND_IN_CONFIG, encoding="utf-8")


def clean_environment() -> Dict[str, str]:
    """Return the environment without any PYTHON* variable."""
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


def run_probe(
    python: str, roots: Dict[str, pathlib.Path], cwd: pathlib.Path, python_path: List[pathlib.Path]
) -> Dict[str, Any]:
    """Run the probe with ``python`` and return its report."""
    environment = clean_environment()
    arguments = [python]
    if python_path:
        environment["PYTHONPATH"] = os.pathsep.join(str(entry) for entry in python_path)
        arguments.append("-S")  # only the given directories, no site-packages
    labels = {label: str(root) for label, root in roots.items()}
    completed = subprocess.run(
        [*arguments, "-c", PROBE, json.dumps(labels)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def virtualenv(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A virtual environment without pip: its python and its site-packages."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = str(root / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"python": python, "site": site}


@pytest.fixture()
def site_packages(virtualenv: Dict[str, str]) -> pathlib.Path:
    """The (emptied) site-packages directory of the virtual environment."""
    site = pathlib.Path(virtualenv["site"])
    for name in ("baseplate", "baseplate_serve"):
        shutil.rmtree(site / name, ignore_errors=True)
    return site


NAMESPACE_CFG = [31, 2.0]


def test_sources_are_namespace_portions() -> None:
    assert not list((SOURCES / "baseplate").rglob("__init__.py"))
    assert sorted(
        str(path.relative_to(SOURCES))
        for path in (SOURCES / "baseplate").rglob("*.py")
        if "__pycache__" not in path.parts
    ) == ["baseplate/config.py", "baseplate/lib/config.py"]


def test_this_package_alone(
    virtualenv: Dict[str, str], site_packages: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    install_this_package(site_packages)
    report = run_probe(virtualenv["python"], {"site": site_packages}, tmp_path, [])

    # A namespace package: no __file__, one portion in site-packages.
    assert report["baseplate"] == {"file": None, "path": ["site/baseplate"]}
    top = report["from baseplate import config"]
    lib = report["from baseplate.lib import config"]
    assert top == {
        "name": "baseplate.config",
        "file": "site/baseplate/config.py",
        "origin": None,
        "is_baseplate_serve": True,
        "cfg": NAMESPACE_CFG,
    }
    assert lib == {
        "name": "baseplate.lib.config",
        "file": "site/baseplate/lib/config.py",
        "origin": None,
        "is_baseplate_serve": True,
        "cfg": NAMESPACE_CFG,
    }
    assert report["import baseplate.config"] == {
        "name": "baseplate.config",
        "file": "site/baseplate/config.py",
        "origin": None,
        "is_baseplate_serve": True,
    }


@pytest.mark.parametrize("stand_in_first", [True, False], ids=["stand-in-first", "ours-first"])
def test_regular_package_on_another_path_entry_wins(
    tmp_path: pathlib.Path, stand_in_first: bool
) -> None:
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    install_this_package(ours)
    install_stand_in(theirs)
    order = [theirs, ours] if stand_in_first else [ours, theirs]
    report = run_probe(
        sys.executable, {"ours": ours, "theirs": theirs}, tmp_path, python_path=order
    )

    # The regular package is imported whatever the order; its __path__ is only
    # its own directory, so this project's baseplate files are never used.
    assert report["baseplate"] == {
        "file": "theirs/baseplate/__init__.py",
        "path": ["theirs/baseplate"],
    }
    stand_in_config = {
        "name": "baseplate.lib.config",
        "file": "theirs/baseplate/lib/config.py",
        "origin": "stand-in",
        "is_baseplate_serve": False,
        "cfg": None,
    }
    assert report["from baseplate import config"] == stand_in_config
    assert report["from baseplate.lib import config"] == stand_in_config
    assert report["import baseplate.config"] == {
        "error": "ModuleNotFoundError: No module named 'baseplate.config'"
    }


def test_without_the_regular_package_path_order_is_irrelevant(tmp_path: pathlib.Path) -> None:
    ours = tmp_path / "ours"
    empty = tmp_path / "empty"
    install_this_package(ours)
    empty.mkdir()
    for order in ([ours, empty], [empty, ours]):
        report = run_probe(sys.executable, {"ours": ours}, tmp_path, python_path=order)
        assert report["baseplate"] == {"file": None, "path": ["ours/baseplate"]}
        assert report["from baseplate import config"]["file"] == "ours/baseplate/config.py"
        assert report["from baseplate import config"]["cfg"] == NAMESPACE_CFG
        assert report["from baseplate.lib import config"]["is_baseplate_serve"]


@pytest.mark.parametrize("stand_in_last", [True, False], ids=["stand-in-last", "ours-last"])
def test_same_site_packages(
    virtualenv: Dict[str, str],
    site_packages: pathlib.Path,
    tmp_path: pathlib.Path,
    stand_in_last: bool,
) -> None:
    # Install both into one site-packages; a later install overwrites the
    # files both provide (only baseplate/lib/config.py).
    if stand_in_last:
        install_this_package(site_packages)
        install_stand_in(site_packages)
    else:
        install_stand_in(site_packages)
        install_this_package(site_packages)
    report = run_probe(virtualenv["python"], {"site": site_packages}, tmp_path, [])

    assert report["baseplate"] == {
        "file": "site/baseplate/__init__.py",
        "path": ["site/baseplate"],
    }
    lib_config = {
        "name": "baseplate.lib.config",
        "file": "site/baseplate/lib/config.py",
        "cfg": None,
    }
    if stand_in_last:
        lib_config.update(origin="stand-in", is_baseplate_serve=False)
    else:
        lib_config.update(origin=None, is_baseplate_serve=True, cfg=NAMESPACE_CFG)
    # baseplate/__init__.py bound the name "config" to baseplate.lib.config,
    # so "from baseplate import config" gives that module, not baseplate/config.py.
    assert report["from baseplate import config"] == lib_config
    assert report["from baseplate.lib import config"] == lib_config
    # This project's baseplate/config.py sits in the merged directory, so the
    # explicit submodule import finds it (and rebinds baseplate.config to it).
    assert report["import baseplate.config"] == {
        "name": "baseplate.config",
        "file": "site/baseplate/config.py",
        "origin": None,
        "is_baseplate_serve": True,
    }
