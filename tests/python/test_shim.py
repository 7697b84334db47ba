"""``baseplate.config`` / ``baseplate.lib.config`` without owning baseplate.py's paths.

This distribution ships no file under ``baseplate/``: ``baseplate_serve-shim.pth``
installs an import hook (``_baseplate_serve_shim``) that provides the shim
modules only when no real ``baseplate`` package is importable. These tests
install the hook's files into the site-packages of a fresh virtual
environment next to (or without) a stand-in for baseplate.py, a regular
package whose ``__init__.py`` does ``from baseplate.lib import config`` like
the real one, and check in a fresh interpreter what gets imported. The real
baseplate.py 2.7.1 and ``pip uninstall`` in both orders are covered by
test_compat_baseplate.py (marker ``compat``).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import venv

from importlib import metadata
from typing import Any, Dict, List, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = REPO / "python"

STAND_IN_INIT = '"""Stand-in for reddit\'s baseplate.py: a regular package."""\nfrom baseplate.lib import config\n'
STAND_IN_CONFIG = 'ORIGIN = "stand-in"\n'

# An editable install's finder, appended to sys.meta_path by a .pth file that
# sorts after ours: the hook must still let it provide ``baseplate``.
EDITABLE_PTH = (
    "import sys; sys.meta_path.append(type('F', (), {'find_spec': staticmethod(lambda name, path=None, target=None:"
    " __import__('importlib.machinery').machinery.PathFinder.find_spec(name, [%r]) if name == 'baseplate' else None)})())\n"
)

PROBE = r"""
import json, sys
out = {}
for stmt in ("from baseplate import config", "from baseplate.lib import config", "import baseplate.config",
             "import baseplate.server"):
    ns = {}
    try:
        exec(stmt, ns)
    except ImportError as exc:
        out[stmt] = {"error": type(exc).__name__}
        continue
    module = ns["config"] if stmt.startswith("from") else sys.modules[stmt.split()[-1]]
    ours = sys.modules.get("baseplate_serve.config")
    out[stmt] = {
        "name": module.__name__,
        "origin": getattr(module, "ORIGIN", None) or module.__spec__.origin,
        "is_baseplate_serve": ours is not None and getattr(module, "parse_config", None) is ours.parse_config,
    }
print(json.dumps(out))
"""

SHIM = {"name": "baseplate.config", "origin": "baseplate-serve shim", "is_baseplate_serve": True}
SHIM_LIB = dict(SHIM, name="baseplate.lib.config")
STAND_IN = {"name": "baseplate.lib.config", "origin": "stand-in", "is_baseplate_serve": False}


def clean_environment() -> Dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}


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
def site(virtualenv: Dict[str, str]) -> pathlib.Path:
    """The (emptied) site-packages directory of the virtual environment."""
    path = pathlib.Path(virtualenv["site"])
    for entry in path.iterdir():
        if entry.name.startswith(("baseplate", "_baseplate", "zz")):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return path


def install_ours(site: pathlib.Path) -> None:
    """What this distribution installs for the shim: the hook, its .pth, and
    baseplate_serve.config (an empty package __init__ stands in for the rest)."""
    shutil.copyfile(SOURCES / "_baseplate_serve_shim.py", site / "_baseplate_serve_shim.py")
    shutil.copyfile(SOURCES / "baseplate_serve-shim.pth", site / "baseplate_serve-shim.pth")
    (site / "baseplate_serve").mkdir()
    (site / "baseplate_serve" / "__init__.py").write_text("")
    shutil.copyfile(SOURCES / "baseplate_serve" / "config.py", site / "baseplate_serve" / "config.py")


def install_stand_in(root: pathlib.Path) -> None:
    lib = root / "baseplate" / "lib"
    lib.mkdir(parents=True)
    (root / "baseplate" / "__init__.py").write_text(STAND_IN_INIT)
    (lib / "__init__.py").write_text("")
    (lib / "config.py").write_text(STAND_IN_CONFIG)


def probe(python: str, cwd: pathlib.Path, python_path: Optional[List[pathlib.Path]] = None) -> Dict[str, Any]:
    env = clean_environment()
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(map(str, python_path))
    done = subprocess.run([python, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    assert done.stderr == "", done.stderr  # a broken .pth line prints here
    return json.loads(done.stdout)


def test_the_installed_distribution_owns_nothing_under_baseplate() -> None:
    files = [str(f) for f in metadata.distribution("baseplate-serve").files or []]
    assert "_baseplate_serve_shim.py" in files and "baseplate_serve-shim.pth" in files
    assert [f for f in files if f.startswith("baseplate/")] == []
    assert "baseplate" not in [p.name for p in SOURCES.iterdir()]


def test_alone_the_hook_provides_the_shim(virtualenv, site, tmp_path) -> None:
    install_ours(site)
    report = probe(virtualenv["python"], tmp_path)
    assert report["from baseplate import config"] == SHIM
    assert report["from baseplate.lib import config"] == SHIM_LIB
    assert report["import baseplate.config"] == SHIM
    # Only the config modules: baseplate.py's other modules are not faked.
    assert report["import baseplate.server"] == {"error": "ModuleNotFoundError"}


@pytest.mark.parametrize("where", ["same-site-packages", "pythonpath", "editable-finder"])
def test_a_real_baseplate_always_wins(virtualenv, site, tmp_path, where) -> None:
    install_ours(site)
    theirs = tmp_path / "theirs"
    if where == "same-site-packages":
        install_stand_in(site)
    else:
        install_stand_in(theirs)
    if where == "editable-finder":
        (site / "zz_editable.pth").write_text(EDITABLE_PTH % str(theirs))
    report = probe(virtualenv["python"], tmp_path, [theirs] if where == "pythonpath" else None)
    assert report["from baseplate import config"] == STAND_IN
    assert report["from baseplate.lib import config"] == STAND_IN
    # As with baseplate.py alone: it has no baseplate/config.py, and the hook
    # provides nothing under a package that is not its own.
    assert report["import baseplate.config"] == {"error": "ModuleNotFoundError"}


def test_removing_either_leaves_the_other_working(virtualenv, site, tmp_path) -> None:
    install_ours(site)
    install_stand_in(site)
    shutil.rmtree(site / "baseplate")  # "pip uninstall baseplate": its files only
    assert probe(virtualenv["python"], tmp_path)["from baseplate.lib import config"] == SHIM_LIB
    install_stand_in(site)
    for name in ("_baseplate_serve_shim.py", "baseplate_serve-shim.pth"):
        (site / name).unlink()  # "pip uninstall baseplate-serve"
    shutil.rmtree(site / "baseplate_serve")
    assert probe(virtualenv["python"], tmp_path)["from baseplate import config"] == STAND_IN


def test_the_cli_installs_the_hook_without_site(tmp_path) -> None:
    """``python -S`` (no .pth files): the server still provides the shim to apps."""
    code = "import sys; from baseplate_serve import _cli; _cli.install_shim(); from baseplate import config; print(config.__spec__.origin)"
    path = [p for p in sys.path if p.endswith("site-packages")] + [str(SOURCES)]
    env = dict(clean_environment(), PYTHONPATH=os.pathsep.join(path))
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.stdout.strip() == "baseplate-serve shim", done.stderr
