"""``baseplate.config`` and ``baseplate.lib.config`` for apps without baseplate.py.

reddit's baseplate.py owns the ``baseplate`` package; this distribution owns
none of its paths. Instead, ``baseplate_serve-shim.pth`` (run by ``site`` at
every interpreter start, like setuptools' ``distutils-precedence.pth``)
appends :class:`ShimFinder` to the *end* of ``sys.meta_path``. The import
system asks it for ``baseplate`` only after every other finder (the
``sys.path`` one, editable installs' finders) found nothing, that is only when
no real ``baseplate`` is importable. Then it provides a package ``baseplate``
with no directory (so nothing else is found under it) and the modules
``baseplate.config``, ``baseplate.lib`` and ``baseplate.lib.config``, which
re-export :mod:`baseplate_serve.config`. When a real ``baseplate`` is
imported, the finder provides nothing under it.

``pip uninstall`` of either distribution therefore leaves the other's files
intact. Kept import-light (no ``baseplate_serve`` import until a shim module
is loaded): every Python process of the environment runs :func:`install`.
"""
import sys

try:  # what importlib.machinery.ModuleSpec is, without importing importlib (~0.5 ms)
    from _frozen_importlib import ModuleSpec
except ImportError:  # pragma: no cover (not CPython)
    from importlib.machinery import ModuleSpec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every interpreter start ~10 ms: not imported at run time
    from types import ModuleType
    from typing import Optional, Sequence

#: The modules this finder can provide, and whether each is a package.
_MODULES = {
    "baseplate": True,
    "baseplate.config": False,
    "baseplate.lib": True,
    "baseplate.lib.config": False,
}

#: Set on every module the finder made, so the finder can tell its own
#: ``baseplate`` from baseplate.py's.
MARKER = "__baseplate_serve_shim__"


class ShimFinder:
    """Finds and loads the shim modules (see the module docstring): a
    meta path finder and loader, without importlib.abc (costly at start-up)."""

    def find_spec(
        self, fullname: str, path: "Optional[Sequence[str]]" = None, target: "Optional[ModuleType]" = None
    ) -> "Optional[ModuleSpec]":
        if fullname not in _MODULES:
            return None
        if fullname == "baseplate":
            if self._found_elsewhere(fullname, path, target):
                return None
        else:
            parent = sys.modules.get(fullname.rpartition(".")[0])
            if parent is None or not getattr(parent, MARKER, False):
                return None  # under baseplate.py's own package: not ours to provide
        return ModuleSpec(fullname, self, origin="baseplate-serve shim", is_package=_MODULES[fullname])

    def _found_elsewhere(
        self, fullname: str, path: "Optional[Sequence[str]]", target: "Optional[ModuleType]"
    ) -> bool:
        """Whether a finder placed after this one (for example an editable
        install's, appended by a later .pth file) finds ``fullname``."""
        finders = sys.meta_path
        later = finders[finders.index(self) + 1 :] if self in finders else []
        for finder in later:
            find = getattr(finder, "find_spec", None)
            try:
                if find is not None and find(fullname, path, target) is not None:
                    return True
            except Exception:  # another finder's failure is reported by its own turn
                continue
        return False

    def create_module(self, spec: "ModuleSpec") -> "Optional[ModuleType]":
        return None  # the default module object

    def exec_module(self, module: "ModuleType") -> None:
        setattr(module, MARKER, True)
        if module.__name__ == "baseplate":
            module.__path__ = []  # a package with no directory: only the shim modules exist under it
            module.__doc__ = "baseplate-serve's stand-in for baseplate.py's package: config parsing only."
        elif module.__name__ == "baseplate.lib":
            module.__path__ = []
            module.__doc__ = "baseplate-serve's stand-in for baseplate.lib: config parsing only."
        else:
            from baseplate_serve import config

            module.__doc__ = f"``{module.__name__}``: re-exports :mod:`baseplate_serve.config`."
            for name in config.__all__:
                setattr(module, name, getattr(config, name))
            module.T = config.T  # type: ignore[attr-defined]
            module.__all__ = list(config.__all__)  # type: ignore[attr-defined]


def install() -> None:
    """Appends the finder to ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, ShimFinder) for finder in sys.meta_path):
        sys.meta_path.append(ShimFinder())
