"""SIGUSR1: the stack of every Python thread and greenlet, in the log; and
the OS threads that must run whatever the gevent hub is doing."""
from __future__ import annotations

import gc
import logging
import sys
import threading
import traceback

from typing import Any, Callable, Dict, List, Optional

logger = logging.getLogger("baseplate_serve.stacks")


def _original(module: str, name: str) -> Any:
    """A thread function as it was before gevent's monkey-patching (which
    turns threads into greenlets)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original(module, name)
        except (AttributeError, ImportError):
            pass
    return getattr(__import__(module), name)


def real_thread_ident() -> int:
    """The OS thread's ident (the key of sys._current_frames()), even under
    monkey-patching, where threading.get_ident() names the greenlet."""
    return _original("_thread", "get_ident")()


#: This module is imported on the main thread, before any serving starts.
MAIN_THREAD_IDENT = real_thread_ident()
#: OS threads started with start_os_thread, by ident: their names in dumps.
_os_thread_names: Dict[int, str] = {}


def start_os_thread(target: Callable[[], None], name: str) -> Callable[[float], bool]:
    """Runs ``target`` on a new OS thread (a real one under monkey-patching
    too); returns ``join(timeout) -> bool`` (True once it has ended)."""
    allocate_lock = _original("_thread", "allocate_lock")
    done = allocate_lock()
    done.acquire()

    def run() -> None:
        _os_thread_names[real_thread_ident()] = name
        try:
            target()
        finally:
            _os_thread_names.pop(real_thread_ident(), None)
            done.release()

    _original("_thread", "start_new_thread")(run, ())

    def join(timeout: float) -> bool:
        if done.acquire(True, timeout):
            done.release()
            return True
        return False

    return join


def use_native_handler_locks() -> None:
    """Gives every logging handler a native (OS-thread) lock instead of the
    monkey-patched one. The OS threads that must log while the hub is busy
    (the signal and monitor threads) share the handlers with the hub's
    greenlets; with gevent's locks, a greenlet, or a hub callback, that
    meets a lock an OS thread holds has to wait through the hub, which can
    leave the hub waiting on itself. A native lock is held only for one
    emit, which does not yield for the usual stream handlers. Call on the
    main thread once logging is configured; no-op without monkey-patching."""
    native_rlock = _original("_thread", "RLock")
    if isinstance(threading.RLock(), native_rlock):
        return  # threading is not patched
    loggers = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for handler in lg.handlers:
            handler.lock = native_rlock()


def _thread_names() -> Dict[int, str]:
    names: Dict[int, str] = {}
    for t in threading.enumerate():
        if t.ident is not None:
            names[t.ident] = t.name
    names.update(_os_thread_names)
    # Under monkey-patching threading's idents are greenlets': name the
    # main OS thread ourselves.
    names[MAIN_THREAD_IDENT] = "MainThread"
    return names


def _greenlets() -> List[Any]:
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return []
    return [obj for obj in gc.get_objects() if isinstance(obj, greenlet_module.greenlet) and obj]


def format_frame(frame: Any) -> str:
    return "".join(traceback.format_stack(frame)).rstrip("\n")


def dump_stacks(native_summary: Optional[Dict[str, Any]] = None) -> None:
    """Logs at WARNING every thread's and greenlet's stack, then the native
    core's state. The thread running a greenlet (e.g. the main thread,
    busy in a request on the hub) shows that greenlet's frames."""
    names = _thread_names()
    logger.warning("Received SIGUSR1, dumping stack traces")
    for ident, frame in sys._current_frames().items():
        logger.warning("Thread %s (%s):\n%s", names.get(ident, "unknown"), ident, format_frame(frame))
    for glet in _greenlets():
        frame = getattr(glet, "gr_frame", None)
        if frame is None:
            continue
        logger.warning("Greenlet %r:\n%s", glet, format_frame(frame))
    if native_summary is not None:
        logger.warning(
            "Native core: %s",
            ", ".join(f"{key.replace('_', ' ')}={value}" for key, value in native_summary.items()),
        )
