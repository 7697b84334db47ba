"""The listening socket: ``--bind`` parsing and binding, as baseplate.py does."""
from __future__ import annotations

import os
import socket
import stat
import struct

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Union

from baseplate_serve._errors import ConfigError


@dataclass(frozen=True)
class BindEndpoint:
    """Where to listen: a TCP host and port, or a UNIX socket path."""

    text: str
    family: int
    address: Union[Tuple[str, int], str]


@dataclass
class Listener:
    """The socket to serve on, and where it came from."""

    sock: socket.socket
    #: Passed by a process manager (Einhorn, systemd), not bound here.
    inherited: bool = False
    #: What to call once serving (Einhorn's ACK).
    on_ready: Optional[Callable[[], None]] = None
    #: The environment that hands ``sock`` over, as the process manager set it:
    #: set again when ``--reload`` re-executes the command (systemd's is
    #: removed once read), so the new process finds the same socket.
    env: Dict[str, str] = field(default_factory=dict)


def parse_bind(text: str) -> BindEndpoint:
    """Parses ``host:port``, ``[v6]:port`` or a UNIX socket path (contains "/")."""
    if "/" in text:
        return BindEndpoint(text, socket.AF_UNIX, text)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is neither host:port nor a path containing '/'")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        return BindEndpoint(text, socket.AF_INET6, (host[1:-1], port))
    if ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:{port}")
    return BindEndpoint(text, socket.AF_INET, (host, port))


def bind_socket(endpoint: BindEndpoint, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """Binds and listens; errors name the endpoint (ConfigError, exit 2)."""
    family, address = endpoint.family, endpoint.address
    if family != socket.AF_UNIX:
        host, port = address  # type: ignore[misc]
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        except socket.gaierror as exc:
            if family == socket.AF_INET:  # a name that only has IPv6 addresses
                try:
                    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
                except socket.gaierror:
                    raise ConfigError(f"--bind {endpoint.text}: cannot resolve {host!r}: {exc.strerror}") from None
            else:
                raise ConfigError(f"--bind {endpoint.text}: cannot resolve {host!r}: {exc.strerror}") from None
        family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Not inherited by children (--reload re-executes the command).
        sock.set_inheritable(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family in (socket.AF_INET, socket.AF_INET6):
            # Spreads load evenly among processes sharing the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        else:
            _remove_stale_unix_socket(str(address))
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--bind {endpoint.text}: cannot listen: {exc.strerror or exc}") from None
    return sock


def listeners_sharing_port(sock: socket.socket) -> int:
    """How many other listening TCP sockets (of any process in this network
    namespace) are bound to the same address and port as ``sock``: with
    SO_REUSEPORT, as baseplate.py binds, a second server of the same user on
    a port joins it instead of failing. 0 for a UNIX socket, or when
    /proc/net is not readable."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0
    host, port = sock.getsockname()[:2]
    packed = socket.inet_pton(sock.family, host)
    # /proc/net/tcp{,6}: the address as 32-bit words in host (little-endian)
    # order, each printed as hex; the port as big-endian hex.
    words = struct.unpack(f"<{len(packed) // 4}I", packed)
    local = "".join(f"{w:08X}" for w in words) + f":{port:04X}"
    table = "/proc/net/tcp" if sock.family == socket.AF_INET else "/proc/net/tcp6"
    try:
        with open(table, encoding="ascii") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return 0
    listening = sum(1 for row in rows if len(row) > 3 and row[1] == local and row[3] == "0A")
    return max(listening - 1, 0)


def _remove_stale_unix_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens there: a leftover of an earlier run
        finally:
            probe.close()


def describe(sock: socket.socket) -> str:
    """``127.0.0.1:9090``, ``[::1]:9090`` or the socket path."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return str(name)
