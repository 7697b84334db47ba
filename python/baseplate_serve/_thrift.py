"""What a Python Thrift processor sees for one call: a protocol object that
behaves like the THeaderProtocol baseplate.py hands to processors.

The native core has already removed the framing (THeader, framed or
unframed) and any zlib transform; this module only decodes and encodes the
protocol (binary or compact, with the thrift package's C accelerator) and
carries the THeader info headers both ways.
"""
from __future__ import annotations

from io import BytesIO
from typing import Any, Dict, List, Tuple

from thrift.protocol.TBinaryProtocol import TBinaryProtocolAccelerated
from thrift.protocol.TCompactProtocol import TCompactProtocolAccelerated
from thrift.transport.TTransport import CReadableTransport, TTransportBase

#: Protocol ids of THeader (and libthrift's getProtocolId()).
BINARY_PROTOCOL_ID = 0
COMPACT_PROTOCOL_ID = 2
#: THeader transform id of zlib.
ZLIB_TRANSFORM = 1


class CallTransport(TTransportBase, CReadableTransport):
    """Reads the request message, collects the reply, and keeps THeader info
    headers (bytes to bytes) with the same methods as THeaderTransport."""

    def __init__(self, payload: bytes, headers: Dict[bytes, bytes], protocol_id: int) -> None:
        self._write_buffer = BytesIO()
        self._protocol_id = protocol_id
        self.reset(payload, headers)

    def reset(self, payload: bytes, headers: Dict[bytes, bytes]) -> None:
        """Makes this transport ready for another call (see process_call)."""
        self._read_buffer = BytesIO(payload)
        self._write_buffer.seek(0)
        self._write_buffer.truncate()
        self._read_headers = headers
        # New containers, not cleared ones: what a caller got from reply()
        # or get_headers() for an earlier call stays as it was.
        self._write_headers: Dict[bytes, bytes] = {}
        self._write_transforms: List[int] = []

    # -- transport
    def isOpen(self) -> bool:
        return True

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self, sz: int) -> bytes:
        return self._read_buffer.read(sz)

    def write(self, buf: bytes) -> None:
        self._write_buffer.write(buf)

    def flush(self) -> None:
        pass

    @property
    def cstringio_buf(self) -> BytesIO:
        return self._read_buffer

    def cstringio_refill(self, partialread: bytes, reqlen: int) -> BytesIO:
        raise EOFError("the request message ended early")

    # -- THeaderTransport's header API
    def get_headers(self) -> Dict[bytes, bytes]:
        return self._read_headers

    def set_header(self, key: bytes, value: bytes) -> None:
        if not isinstance(key, bytes):
            raise ValueError("header names must be bytes")
        if not isinstance(value, bytes):
            raise ValueError("header values must be bytes")
        self._write_headers[key] = value

    def clear_headers(self) -> None:
        self._write_headers.clear()

    def add_transform(self, transform_id: int) -> None:
        if transform_id != ZLIB_TRANSFORM:
            raise ValueError("unknown transform")
        self._write_transforms.append(transform_id)

    @property
    def protocol_id(self) -> int:
        return self._protocol_id

    def reply(self) -> Tuple[bytes, Dict[bytes, bytes], bool]:
        return self._write_buffer.getvalue(), self._write_headers, bool(self._write_transforms)


class _HeaderMixin:
    trans: CallTransport

    def get_headers(self) -> Dict[bytes, bytes]:
        return self.trans.get_headers()

    def set_header(self, key: bytes, value: bytes) -> None:
        self.trans.set_header(key, value)

    def clear_headers(self) -> None:
        self.trans.clear_headers()

    def add_transform(self, transform_id: int) -> None:
        self.trans.add_transform(transform_id)


class HeaderBinaryProtocol(_HeaderMixin, TBinaryProtocolAccelerated):
    """Binary protocol with THeaderProtocol's header methods."""


class HeaderCompactProtocol(_HeaderMixin, TCompactProtocolAccelerated):
    """Compact protocol with THeaderProtocol's header methods."""


#: Transport and protocol pairs of finished calls, per protocol id, reused by
#: later calls: building them costs as much Python as an echo call's own
#: decoding, processing and encoding. A list, not one pair per thread:
#: greenlets interleave calls on one thread. Pops and appends are atomic
#: under the GIL.
_idle: Dict[int, List[Tuple[CallTransport, Any]]] = {}
#: Pairs kept per protocol id at most (the calls in flight at a peak).
_MAX_IDLE = 256


def _new_pair(payload: bytes, headers: Dict[bytes, bytes], protocol_id: int) -> Tuple[CallTransport, Any]:
    trans = CallTransport(payload, headers, protocol_id)
    if protocol_id == COMPACT_PROTOCOL_ID:
        return trans, HeaderCompactProtocol(trans)
    return trans, HeaderBinaryProtocol(trans, strictRead=False, strictWrite=True)


def process_call(
    processor: Any, payload: bytes, headers: Dict[bytes, bytes], protocol_id: int
) -> Tuple[bytes, Dict[bytes, bytes], bool]:
    """Runs ``processor.process(iprot, oprot)`` for one call, as baseplate.py
    does (one protocol object for both), and returns the reply message, its
    info headers, and whether the app asked for a zlib reply."""
    idle = _idle.setdefault(protocol_id, [])
    if idle:
        pair = idle.pop()
        pair[0].reset(payload, headers)
    else:
        pair = _new_pair(payload, headers, protocol_id)
    trans, prot = pair
    processor.process(prot, prot)
    reply = trans.reply()
    # Only after a call that ended cleanly: a protocol that raised may be
    # mid-message (the compact protocol keeps a state machine).
    if len(idle) < _MAX_IDLE:
        idle.append(pair)
    return reply
