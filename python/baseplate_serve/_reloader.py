"""``--reload``: re-execute the command when a watched file changes.

Development only. Watches every loaded Python module's source, the config
file, and any extra files (native apps), with inotify on their
directories (editors often save by renaming a new file into place). A burst
of changes is debounced; a changed Python file that does not compile is
reported and the watcher keeps watching, so fixing it brings the server back.

What crosses the re-exec, and what does not:

- No descriptor but the listener of a process manager (Einhorn's
  ``EINHORN_FD_<n>``, systemd's fd 3) and the watcher's inotify descriptor
  (a change saved while the new process starts waits there for its watcher
  instead of being lost): every other one is marked close-on-exec
  just before ``execv``, client connections the core accepted included (Asio
  accepts them inheritable), so their clients see the close at once instead
  of hanging on a process that no longer knows them; one accepted between
  the marking and the exec is closed by the new process first thing
  (``close_stragglers``). A listener bound here to
  ``--bind`` is closed too; the new process binds it again, as baseplate.py's
  reloader does.
- No stale bytecode: a ``.pyc`` is trusted when the source's mtime (whole
  seconds) and size match, so a same-size edit within the second of the last
  compile would be served as the old code. The cached bytecode of every
  changed source is removed before re-executing, so the new process compiles
  them afresh.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import select
import socket
import struct
import sys
import threading
import time

from typing import TYPE_CHECKING, Dict, Iterable, Optional, Set

from baseplate_serve._listener import Listener

if TYPE_CHECKING:
    import ctypes

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


#: The descriptors --reload keeps across the re-exec, for close_stragglers.
KEEP_FDS_VAR = "BASEPLATE_SERVE_RELOAD_KEEP_FDS"
#: The watcher's inotify descriptor, handed to the re-executed command: a
#: change saved while it starts is queued there instead of lost.
INOTIFY_VAR = "BASEPLATE_SERVE_RELOAD_INOTIFY"


def _libc() -> "ctypes.CDLL":
    """The C library (ctypes is imported here, not at start-up: the command
    imports this module at every start to look for close_stragglers' work)."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class _Inotify:
    """The few inotify calls needed, through libc (the stdlib has none)."""

    def __init__(self) -> None:
        import ctypes

        libc = _libc()
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        inherited = self._inherited()
        self.fd = inherited if inherited is not None else libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        # Watching a directory again returns its watch descriptor of before,
        # so events queued by the previous process map to the same paths.
        self.dirs: Dict[int, str] = {}

    @staticmethod
    def _inherited() -> Optional[int]:
        """The descriptor of the process this one replaced, if any."""
        try:
            fd = int(os.environ.pop(INOTIFY_VAR, ""))
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                return None
        except (ValueError, OSError):
            return None
        os.set_inheritable(fd, False)
        return fd

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


#: close_range(2) flag: mark close-on-exec instead of closing (Linux 5.11).
_CLOSE_RANGE_CLOEXEC = 1 << 2
#: The highest descriptor number close_range(2) accepts.
_MAX_FD = 0xFFFFFFFF


def _cloexec_range(libc: Optional["ctypes.CDLL"], first: int, last: int) -> None:
    """Marks descriptors ``first..last`` close-on-exec, without closing them:
    the core's threads still use theirs until ``execv`` replaces the process."""
    if first > last:
        return
    close_range = getattr(libc, "close_range", None) if libc is not None else None
    if close_range is not None:
        import ctypes

        close_range.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int]
        if close_range(first, last, _CLOSE_RANGE_CLOEXEC) == 0:
            return
    # An older kernel or libc: one descriptor at a time.
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if first <= fd <= last:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the directory's own descriptor, closed meanwhile


def _keep_only(keep: Iterable[int]) -> None:
    """Every descriptor from 3 on is closed by the coming ``execv``, except those in ``keep``."""
    try:
        libc: Optional["ctypes.CDLL"] = _libc()
    except OSError:
        libc = None
    first = 3
    for fd in sorted(set(keep)):
        _cloexec_range(libc, first, fd - 1)
        os.set_inheritable(fd, True)
        first = fd + 1
    _cloexec_range(libc, first, _MAX_FD)


def close_stragglers() -> None:
    """First thing in the re-executed command: closes every descriptor from
    3 on that ``_keep_only`` did not keep. The core's threads ran on until
    ``execv``, so a connection accepted between the marking and the exec
    (Asio accepts inheritable) crossed it; nothing of this process is open
    yet to be mistaken for one."""
    if KEEP_FDS_VAR not in os.environ:
        return
    keep = set()
    for text in os.environ.pop(KEEP_FDS_VAR).split(","):
        if text.strip().isdigit():
            keep.add(int(text))
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= 3 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the directory's own descriptor, closed already


def _remove_bytecode(sources: Iterable[str]) -> None:
    """Removes the cached bytecode of changed sources: the next import
    compiles them, whatever their mtime and size."""
    for source in sources:
        if not source.endswith(".py"):
            continue
        try:
            os.unlink(importlib.util.cache_from_source(source))
        except (OSError, ValueError, NotImplementedError):
            pass  # none cached (or caching off): nothing stale to read


class _Reexec:
    """How to re-execute this command with the listener it must keep."""

    def __init__(self, listener: Listener) -> None:
        #: The process manager's descriptor, kept open at its number (None: bound here).
        self.kept = listener.sock if listener.inherited else None
        #: Environment the process manager set, to set again (systemd's is removed once read).
        self.env = dict(listener.env)

    def __call__(self, changed: Iterable[str], inotify_fd: int) -> None:
        logger.warning("Reloading: %s", " ".join(sys.argv))
        for handler in logging.getLogger().handlers:
            handler.flush()
        _remove_bytecode(changed)
        for name, value in self.env.items():
            os.environ[name] = value
        keep = [inotify_fd] + ([self.kept.fileno()] if self.kept is not None else [])
        os.environ[INOTIFY_VAR] = str(inotify_fd)
        os.environ[KEEP_FDS_VAR] = ",".join(map(str, keep))
        _keep_only(keep)
        argv = [sys.executable] + (["-m", "baseplate_serve"] if sys.argv[0].endswith("__main__.py") else [sys.argv[0]])
        os.execv(sys.executable, argv + sys.argv[1:])


def _watch(extra_files: Iterable[str], reexec: _Reexec) -> None:
    inotify = _Inotify()
    files = _watched_files(extra_files)
    for directory in {os.path.dirname(f) for f in files}:
        inotify.watch_dir(directory)
    broken: Set[str] = set()
    #: Every change since this process started, reloaded with or not yet.
    pending: Set[str] = set()
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
        pending |= changed
        bad = {f for f in changed if f.endswith(".py") and not _compiles(f)}
        if bad:
            broken |= bad
            continue
        if any(not _compiles(f) for f in broken - changed):
            continue
        reexec(pending, inotify.fd)


def start_reload_watcher(extra_files: Iterable[str], listener: Listener) -> socket.socket:
    """Starts the watcher thread (a daemon) and returns the socket to serve
    on: for a process manager's listener, a duplicate, since the server
    closes the socket it serves on and the re-executed command finds the
    listener by its number, which must stay open here."""
    logger.warning("--reload is on: the server restarts when its files change (development only)")
    serve = listener.sock.dup() if listener.inherited else listener.sock
    if listener.inherited:
        # Not inherited by processes the app starts; made inheritable just before execv.
        listener.sock.set_inheritable(False)
    extra = list(extra_files)
    thread = threading.Thread(
        target=_watch, args=(extra, _Reexec(listener)), name="baseplate-reloader", daemon=True
    )
    thread.start()
    # Give the thread its watches before files can change under it.
    time.sleep(0.05)
    return serve
