"""Clients and log readers the end-to-end tests share: a raw HTTP client
with a strict response parser, a reader of what a server printed, and
builders of raw Thrift frames. Servers are started by conftest.py."""

from __future__ import annotations

import re
import select
import socket
import struct
import time

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from thrift.protocol import THeaderProtocol
from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID

from conftest import Server

TRACEBACK = "Traceback (most recent call last)"
#: The start of one log record in the default format.
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", re.M)

# --------------------------------------------------------------------------
# a raw HTTP client
# --------------------------------------------------------------------------


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    def connection_tokens(self) -> List[str]:
        return [t.strip().lower() for t in (self.header("connection") or "").split(",") if t.strip()]


class Incomplete(Exception):
    """The connection ended before the response did."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


class RawConnection:
    """A client socket with a byte buffer and a strict response parser."""

    def __init__(self, port: int, timeout: float = 15, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> bool:
        """Sends all of ``data``; False when the server closed first."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, sep: bytes, consumed: bytes = b"") -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                return self._take(i + len(sep))
            if not self._fill():
                raise Incomplete(f"connection closed before {sep!r}", consumed + bytes(self.buf))

    def read_exact(self, n: int, consumed: bytes = b"") -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise Incomplete(f"connection closed with {len(self.buf)} of {n} bytes", consumed + bytes(self.buf))
        return self._take(n)

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        return self._take(len(self.buf))

    def read_response(self, method: str = "GET") -> RawResponse:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        m = re.fullmatch(r"(HTTP/\d\.\d) (\d{3}) ?(.*)", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        resp = RawResponse(m[1], int(m[2]), m[3])
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip() and "\r" not in line, f"bad header line {line!r}"
            resp.headers.append((name.lower(), value.strip()))
        if 100 <= resp.status < 200 or method == "HEAD" or resp.status in (204, 304):
            return resp
        te = resp.header("transfer-encoding")
        if te is not None:
            assert te.lower() == "chunked", te
            assert resp.header("content-length") is None, "both Transfer-Encoding and Content-Length"
            resp.chunked = True
            resp.body = self._read_chunked()
        elif resp.header("content-length") is not None:
            resp.body = self.read_exact(int(resp.header("content-length")))
        else:
            resp.body = self.read_to_eof()
        return resp

    def read_final_response(self, method: str = "GET") -> RawResponse:
        """The first non-1xx response (skipping interim ones)."""
        while True:
            resp = self.read_response(method)
            if resp.status >= 200:
                return resp

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.read_until(b"\r\n", bytes(body))
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                self.read_until(b"\r\n", bytes(body))  # no trailers from this server
                return bytes(body)
            body += self.read_exact(size, bytes(body))
            assert self.read_exact(2, bytes(body)) == b"\r\n"

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """True when the server closes (EOF or reset) within ``timeout`` and
        sends nothing more."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eof:
                return not self.buf
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                return False
            self._fill()
        return self.eof and not self.buf

    def wait_closed(self, timeout: float) -> Tuple[bool, bytes]:
        """Reads until the server closes or ``timeout`` passes; returns
        (closed, bytes received)."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if r:
                self._fill()
        return self.eof, self._take(len(self.buf))

    def silent_for(self, seconds: float) -> bool:
        """True when nothing arrives (and the connection stays open) for ``seconds``."""
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r and not self.buf


def raw_exchange(port: int, request: bytes, method: str = "GET") -> RawResponse:
    """One request on a new connection, and its response."""
    with RawConnection(port) as c:
        c.send(request)
        return c.read_response(method)


# --------------------------------------------------------------------------
# what a server printed
# --------------------------------------------------------------------------


class Log:
    """What a server printed from now on."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.out_mark = len(server.stdout)
        self.err_mark = len(server.stderr)

    @property
    def out(self) -> str:
        return self.server.stdout[self.out_mark :]

    @property
    def err(self) -> str:
        return self.server.stderr[self.err_mark :]

    def wait_for(self, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.out):
                return self.out
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the server log within {timeout}s:\n{self.out}\n{self.err}")

    def lines(self, word: str) -> List[str]:
        """Lines with ``word`` (a level, a logger name) as a whole word."""
        return [line for line in self.out.splitlines() if f" {word} " in line]

    def records(self) -> List[str]:
        """Log records (with their continuation lines) written since the mark."""
        out = self.out
        starts = [m.start() for m in RECORD.finditer(out)]
        return [out[a:b] for a, b in zip(starts, starts[1:] + [len(out)])]

    def assert_clean(self) -> None:
        for text in (self.out, self.err):
            for bad in (TRACEBACK, "Exception ignored", "WSGIWarning", "AssertionError", " ERROR "):
                assert bad not in text, f"{bad!r} in the server output:\n{self.out}\n{self.err}"


# --------------------------------------------------------------------------
# Thrift
# --------------------------------------------------------------------------


def header_protocol(compact: bool) -> Callable:
    """A THeader client protocol factory (binary or compact inside)."""
    sub = THeaderSubprotocolID.COMPACT if compact else THeaderSubprotocolID.BINARY
    return lambda t: THeaderProtocol.THeaderProtocol(
        t, allowed_client_types=[THeaderClientType.HEADERS], default_protocol=sub
    )


def frame(body: bytes) -> bytes:
    """A framed-transport frame around ``body``."""
    return struct.pack(">I", len(body)) + body


def header_frame(payload: bytes, transforms: Tuple[int, ...] = (), info: bytes = b"") -> bytes:
    """A THeader frame (binary protocol) around ``payload``."""
    head = bytes([0, len(transforms), *transforms]) + info
    while len(head) % 4:
        head += b"\x00"
    body = b"\x0f\xff\x00\x00" + struct.pack(">i", 1) + struct.pack(">H", len(head) // 4) + head + payload
    return frame(body)
