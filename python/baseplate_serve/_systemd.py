"""systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, sd_listen_fds(3))."""
from __future__ import annotations

import os
import socket

from typing import Optional

from baseplate_serve._errors import ConfigError
from baseplate_serve._listener import Listener

#: The first fd systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def get_listener() -> Optional[Listener]:
    """The socket systemd passed to this process, or None when it passed none.

    One socket only: the server serves one listener, so several
    (``LISTEN_FDS`` > 1: several ``ListenStream=`` in the .socket unit) stop
    the start with a ConfigError instead of leaving all but the first open
    and unserved."""
    try:
        if int(os.environ.get("LISTEN_PID", "-1")) != os.getpid():
            return None
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    if count > 1:
        names = os.environ.get("LISTEN_FDNAMES")
        raise ConfigError(
            f"systemd passed {count} sockets (LISTEN_FDS={count}{', LISTEN_FDNAMES=' + names if names else ''});"
            " baseplate-serve serves one: give the .socket unit one ListenStream=, or run one service per socket"
        )
    # Set again by --reload for the re-executed command (same pid).
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    if "LISTEN_FDNAMES" in os.environ:
        env["LISTEN_FDNAMES"] = os.environ["LISTEN_FDNAMES"]
    # Not passed on to processes this one starts (sd_listen_fds unsets them too).
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    try:
        sock = socket.socket(fileno=LISTEN_FDS_START)  # family and type from the fd
    except OSError as exc:
        raise ConfigError(f"systemd: LISTEN_FDS=1 but fd {LISTEN_FDS_START} is not a socket: {exc.strerror}") from None
    sock.set_inheritable(False)
    return Listener(sock, inherited=True, env=env)
