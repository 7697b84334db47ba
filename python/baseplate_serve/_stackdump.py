"""SIGUSR1: the stack of every Python thread and greenlet, in the log."""
from __future__ import annotations

import gc
import logging
import sys
import threading
import traceback

from typing import Any, Dict, List, Optional

logger = logging.getLogger("baseplate_serve.stacks")


def _greenlets() -> List[Any]:
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return []
    return [obj for obj in gc.get_objects() if isinstance(obj, greenlet_module.greenlet) and obj]


def dump_stacks(native_summary: Optional[Dict[str, Any]] = None) -> None:
    """Logs at WARNING every thread's and greenlet's stack, then the native core's state."""
    names = {t.ident: t.name for t in threading.enumerate()}
    logger.warning("Received SIGUSR1, dumping stack traces")
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame)).rstrip("\n")
        logger.warning("Thread %s (%s):\n%s", names.get(ident, "unknown"), ident, stack)
    for glet in _greenlets():
        frame = getattr(glet, "gr_frame", None)
        if frame is None:
            continue
        stack = "".join(traceback.format_stack(frame)).rstrip("\n")
        logger.warning("Greenlet %r:\n%s", glet, stack)
    if native_summary is not None:
        logger.warning(
            "Native core: %s",
            ", ".join(f"{key.replace('_', ' ')}={value}" for key, value in native_summary.items()),
        )
