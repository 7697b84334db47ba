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
        self._read_buffer = BytesIO(payload)
        self._write_buffer = BytesIO()
        self._read_headers = headers
        self._write_headers: Dict[bytes, bytes] = {}
        self._write_transforms: List[int] = []
        self._protocol_id = protocol_id

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


def process_call(
    processor: Any, payload: bytes, headers: Dict[bytes, bytes], protocol_id: int
) -> Tuple[bytes, Dict[bytes, bytes], bool]:
    """Runs ``processor.process(iprot, oprot)`` for one call, as baseplate.py
    does (one protocol object for both), and returns the reply message, its
    info headers, and whether the app asked for a zlib reply."""
    trans = CallTransport(payload, headers, protocol_id)
    if protocol_id == COMPACT_PROTOCOL_ID:
        prot: Any = HeaderCompactProtocol(trans)
    else:
        prot = HeaderBinaryProtocol(trans, strictRead=False, strictWrite=True)
    processor.process(prot, prot)
    return trans.reply()
