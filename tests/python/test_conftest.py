"""The suite's own guard: it refuses to test an installed copy older than the tree."""
from __future__ import annotations

import os
import time

from pathlib import Path

from conftest import stale_install_report


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    for rel, text in {
        "python/baseplate_serve/__init__.py": "x = 1\n",
        "python/baseplate/config.py": "y = 1\n",
        "cpp/core/server.cpp": "// core\n",
        "CMakeLists.txt": "# build\n",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    return tree


def install(tree: Path, site: Path) -> Path:
    for name in ("baseplate_serve", "baseplate"):
        for source in (tree / "python" / name).rglob("*.py"):
            copy = site / source.relative_to(tree / "python")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(source.read_bytes())
    core = site / "baseplate_serve" / "_core.cpython-311-x86_64-linux-gnu.so"
    core.write_bytes(b"\x7fELF")
    later = time.time() + 10
    os.utime(core, (later, later))
    return site / "baseplate_serve"


def test_an_up_to_date_install_passes(tmp_path):
    tree = make_tree(tmp_path)
    assert stale_install_report(tree, install(tree, tmp_path / "site")) == []


def test_a_python_file_changed_since_the_install_is_named(tmp_path):
    tree = make_tree(tmp_path)
    package = install(tree, tmp_path / "site")
    (tree / "python" / "baseplate" / "config.py").write_text("y = 2\n")
    (tree / "python" / "baseplate_serve" / "_new.py").write_text("z = 1\n")
    assert set(stale_install_report(tree, package)) == {
        "baseplate/config.py differs from the tree's",
        "baseplate_serve/_new.py differs from the tree's",
    }


def test_a_core_older_than_the_cpp_sources_is_named(tmp_path):
    tree = make_tree(tmp_path)
    package = install(tree, tmp_path / "site")
    later = time.time() + 20
    os.utime(tree / "cpp" / "core" / "server.cpp", (later, later))
    (problem,) = stale_install_report(tree, package)
    assert problem.startswith("_core.cpython-311-x86_64-linux-gnu.so is older than 1 C++ source(s)")
    assert "cpp/core/server.cpp" in problem


def test_the_tree_built_in_place_is_checked_for_its_core_only(tmp_path):
    tree = make_tree(tmp_path)
    assert stale_install_report(tree, tree / "python" / "baseplate_serve") == [
        f"no _core*.so in {tree / 'python' / 'baseplate_serve'}"
    ]
