"""Einhorn worker mode: the inherited listener and the manual-mode ACK.

Facts of the real master (Einhorn 1.x) this respects: the listener arrives
non-blocking and shared by every worker (EAGAIN from accept is normal, it is
never made blocking nor shut down, each worker just closes its copy); the fd
number is in ``EINHORN_FD_<n>``; ``EINHORN_SOCK_FD`` is not usable by
exec'd workers, so the ACK goes through ``EINHORN_SOCK_PATH``.
"""
from __future__ import annotations

import json
import logging
import os
import socket

from typing import Optional

from baseplate_serve._errors import ConfigError
from baseplate_serve._listener import Listener

#: Set once this worker has ACKed, to its pid: a command re-executed by
#: ``--reload`` (same pid) does not ACK again (the master would log an error).
ACKED_VAR = "BASEPLATE_SERVE_EINHORN_ACKED"


def is_worker() -> bool:
    """True when Einhorn's master is our parent."""
    try:
        return os.getppid() == int(os.environ.get("EINHORN_MASTER_PID", "-1"))
    except ValueError:
        return False


def get_socket(index: int = 0) -> Optional[socket.socket]:
    """The listener Einhorn bound for us, or None when there is none."""
    if not is_worker():
        return None
    try:
        count = int(os.environ.get("EINHORN_FD_COUNT", "0"))
        if not 0 <= index < count:
            return None
        fd = int(os.environ[f"EINHORN_FD_{index}"])
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"Einhorn: bad EINHORN_FD_* environment: {exc}") from None
    family_name = os.environ.get(f"EINHORN_FD_FAMILY_{index}", "AF_INET")
    family = getattr(socket, family_name, None) if family_name.startswith("AF_") else None
    if family is None:
        raise ConfigError(f"Einhorn: unknown socket family {family_name!r}")
    try:
        # fileno= wraps the fd as is: no dup, and its non-blocking mode is kept.
        return socket.socket(family, socket.SOCK_STREAM, fileno=fd)
    except OSError as exc:
        raise ConfigError(f"Einhorn: EINHORN_FD_{index}={fd} is not a socket: {exc.strerror}") from None


def get_listener() -> Optional[Listener]:
    """The first listener Einhorn bound for us (with the ACK to send once
    serving), or None when this is no Einhorn worker. Its environment stays
    as the master set it, so the command re-executed by ``--reload`` finds
    the same descriptor."""
    sock = get_socket()
    if sock is None:
        return None
    count = os.environ.get("EINHORN_FD_COUNT", "1")
    if count != "1":
        # As baseplate.py, which serves get_socket(0); but not silently.
        logging.getLogger("baseplate_serve").warning(
            "Einhorn passed %s sockets (EINHORN_FD_COUNT=%s): serving only the first, EINHORN_FD_0", count, count
        )
    return Listener(sock, inherited=True, on_ready=ack_startup)


def ack_startup() -> None:
    """Tells the master (manual ACK mode) that this worker serves."""
    if os.environ.get(ACKED_VAR) == str(os.getpid()):
        return  # re-executed by --reload: ACKed before
    path = os.environ["EINHORN_SOCK_PATH"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as control:
        control.connect(path)
        control.sendall((json.dumps({"command": "worker:ack", "pid": os.getpid()}) + "\n").encode())
    os.environ[ACKED_VAR] = str(os.getpid())
