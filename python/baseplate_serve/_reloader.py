"""``--reload``: re-execute the command when a watched file changes.

Development only. Watches every loaded Python module's source, the config
file, and any extra files (native plugins), with inotify on their
directories (editors often save by renaming a new file into place). A burst
of changes is debounced; a changed Python file that does not compile is
reported and the watcher keeps watching, so fixing it brings the server back.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import struct
import sys
import threading
import time

from typing import Dict, Iterable, Set

logger = logging.getLogger("baseplate_serve.reload")

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")
#: Quiet time after the last change before acting on a burst.
DEBOUNCE = 0.2


def _watched_files(extra_files: Iterable[str]) -> Set[str]:
    files = set()
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if filename and filename.endswith((".py", ".so")):
            files.add(os.path.abspath(filename))
    files.update(os.path.abspath(f) for f in extra_files)
    return {f for f in files if os.path.exists(f)}


class _Inotify:
    """The few inotify calls needed, through libc (the stdlib has none)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs: Dict[int, str] = {}

    def watch_dir(self, path: str) -> None:
        mask = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE
        wd = self._add(self.fd, os.fsencode(path), mask)
        if wd >= 0:
            self.dirs[wd] = path

    def read_changed(self, timeout: float) -> Set[str]:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return set()
        changed = set()
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return changed
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if wd in self.dirs and name:
                changed.add(os.path.join(self.dirs[wd], os.fsdecode(name)))
        return changed


def _compiles(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except SyntaxError as exc:
        logger.error("Not reloading: %s:%s: %s", exc.filename, exc.lineno, exc.msg)
        return False
    except OSError:
        return True  # deleted or unreadable: let the new process report it
    return True


def _reexec() -> None:
    logger.warning("Reloading: %s", " ".join(sys.argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    argv = [sys.executable] + (["-m", "baseplate_serve"] if sys.argv[0].endswith("__main__.py") else [sys.argv[0]])
    os.execv(sys.executable, argv + sys.argv[1:])


def _watch(extra_files: Iterable[str]) -> None:
    inotify = _Inotify()
    files = _watched_files(extra_files)
    for directory in {os.path.dirname(f) for f in files}:
        inotify.watch_dir(directory)
    broken: Set[str] = set()
    while True:
        changed = inotify.read_changed(1.0) & (files | broken)
        if not changed:
            continue
        # Debounce: wait until the burst is over.
        while True:
            more = inotify.read_changed(DEBOUNCE) & (files | broken)
            if not more:
                break
            changed |= more
        bad = {f for f in changed if f.endswith(".py") and not _compiles(f)}
        if bad:
            broken |= bad
            continue
        if any(not _compiles(f) for f in broken - changed):
            continue
        _reexec()


def start_reload_watcher(extra_files: Iterable[str]) -> None:
    """Starts the watcher thread (a daemon)."""
    logger.warning("--reload is on: the server restarts when its files change (development only)")
    extra = list(extra_files)
    thread = threading.Thread(target=_watch, args=(extra,), name="baseplate-reloader", daemon=True)
    thread.start()
    # Give the thread its watches before files can change under it.
    time.sleep(0.05)
