"""systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, sd_listen_fds(3))."""
from __future__ import annotations

import os
import socket

from typing import Optional

#: The first fd systemd passes (SD_LISTEN_FDS_START).
LISTEN_FDS_START = 3


def get_socket() -> Optional[socket.socket]:
    """The first socket systemd passed to this process, or None."""
    try:
        if int(os.environ.get("LISTEN_PID", "-1")) != os.getpid():
            return None
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    # Not passed on to processes this one starts (sd_listen_fds unsets them too).
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sock = socket.socket(fileno=LISTEN_FDS_START)  # family and type from the fd
    sock.set_inheritable(False)
    return sock
