"""Writes the Thrift seed corpus of fuzz/thrift_fuzz.cpp into
fuzz/corpus/thrift/: calls as real clients put them on the wire, made with
the thrift package (THeader with info headers and zlib, framed and unframed,
binary and compact), plus a few pipelined and edge-case messages.

    python fuzz/make_thrift_corpus.py

The files it writes are committed; run it again only to change the seeds.
"""
from __future__ import annotations

import struct
import sys

from pathlib import Path
from typing import Callable, Dict

from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol
from thrift.Thrift import TMessageType, TType
from thrift.transport import TTransport
from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID, THeaderTransformID

OUT = Path(__file__).resolve().parent / "corpus" / "thrift"


def header(compact: bool, headers: Dict[bytes, bytes] = None, zlib: bool = False):
    def make(mem):
        sub = THeaderSubprotocolID.COMPACT if compact else THeaderSubprotocolID.BINARY
        prot = THeaderProtocol.THeaderProtocol(
            mem, allowed_client_types=[THeaderClientType.HEADERS], default_protocol=sub
        )
        for k, v in (headers or {}).items():
            prot.trans.set_header(k, v)
        if zlib:
            prot.trans.add_transform(THeaderTransformID.ZLIB)
        return prot

    return make


KINDS: Dict[str, Callable] = {
    "header_binary": header(False),
    "header_compact": header(True),
    "header_binary_headers": header(False, {b"Trace": b"1234", b"Span": b"5", b"Deadline-Budget": b"100"}),
    "header_compact_headers": header(True, {b"Trace": b"99", b"User-Agent": b"seed"}),
    "header_binary_zlib": header(False, zlib=True),
    "header_compact_zlib_headers": header(True, {b"Trace": b"7"}, zlib=True),
    "framed_binary": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(t)),
    "framed_compact": lambda t: TCompactProtocol.TCompactProtocol(TTransport.TFramedTransport(t)),
    "unframed_binary": lambda t: TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(t)),
    "unframed_compact": lambda t: TCompactProtocol.TCompactProtocol(TTransport.TBufferedTransport(t)),
}


def echo_args(prot, message: str) -> None:
    """The args struct of `string echo(1: string message)`."""
    prot.writeStructBegin("echo_args")
    prot.writeFieldBegin("message", TType.STRING, 1)
    prot.writeString(message)
    prot.writeFieldEnd()
    prot.writeFieldStop()
    prot.writeStructEnd()


def rich_args(prot) -> None:
    """Every kind of field: scalars, containers, a nested struct."""
    prot.writeStructBegin("rich_args")
    prot.writeFieldBegin("b", TType.BOOL, 1)
    prot.writeBool(True)
    prot.writeFieldEnd()
    prot.writeFieldBegin("i8", TType.BYTE, 2)
    prot.writeByte(-3)
    prot.writeFieldEnd()
    prot.writeFieldBegin("i16", TType.I16, 3)
    prot.writeI16(-300)
    prot.writeFieldEnd()
    prot.writeFieldBegin("i64", TType.I64, 4)
    prot.writeI64(1 << 40)
    prot.writeFieldEnd()
    prot.writeFieldBegin("d", TType.DOUBLE, 5)
    prot.writeDouble(3.25)
    prot.writeFieldEnd()
    prot.writeFieldBegin("list", TType.LIST, 6)
    prot.writeListBegin(TType.I32, 3)
    for i in (1, -2, 3):
        prot.writeI32(i)
    prot.writeListEnd()
    prot.writeFieldEnd()
    prot.writeFieldBegin("map", TType.MAP, 7)
    prot.writeMapBegin(TType.STRING, TType.I64, 2)
    for k, v in (("a", 1), ("b", 2)):
        prot.writeString(k)
        prot.writeI64(v)
    prot.writeMapEnd()
    prot.writeFieldEnd()
    prot.writeFieldBegin("set", TType.SET, 8)
    prot.writeSetBegin(TType.BYTE, 2)
    prot.writeByte(1)
    prot.writeByte(2)
    prot.writeSetEnd()
    prot.writeFieldEnd()
    prot.writeFieldBegin("nested", TType.STRUCT, 9)
    echo_args(prot, "inner")
    prot.writeFieldEnd()
    prot.writeFieldStop()
    prot.writeStructEnd()


def call(kind: str, name: str, seqid: int, body=None, mtype: int = TMessageType.CALL) -> bytes:
    mem = TTransport.TMemoryBuffer()
    prot = KINDS[kind](mem)
    prot.writeMessageBegin(name, mtype, seqid)
    (body or (lambda p: echo_args(p, "hello")))(prot)
    prot.writeMessageEnd()
    prot.trans.flush()
    return mem.getvalue()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    seeds: Dict[str, bytes] = {}
    for kind in KINDS:
        seeds[f"{kind}_echo"] = call(kind, "echo", 1)
        seeds[f"{kind}_rich"] = call(kind, "rich", 2, rich_args)
        seeds[f"{kind}_pipelined"] = call(kind, "echo", 3) + call(kind, "recall", 4, lambda p: echo_args(p, ""))
    seeds["header_binary_oneway"] = call("header_binary", "remember", 5, mtype=TMessageType.ONEWAY)
    seeds["framed_binary_oneway"] = call("framed_binary", "remember", 6, mtype=TMessageType.ONEWAY)
    seeds["header_binary_zlib_big"] = call("header_binary_zlib", "echo", 7, lambda p: echo_args(p, "z" * 5000))
    seeds["header_binary_empty_frame"] = struct.pack(">I", 14) + b"\x0f\xff\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00"
    # A reply and an exception, as a confused peer might send them.
    seeds["framed_binary_reply"] = call("framed_binary", "echo", 8, mtype=TMessageType.REPLY)
    seeds["unframed_binary_exception"] = call("unframed_binary", "echo", 9, mtype=TMessageType.EXCEPTION)
    # Edge cases found by hand in tests/python/test_robustness.py.
    seeds["unframed_binary_nested"] = (
        b"\x80\x01\x00\x01\x00\x00\x00\x04echo\x00\x00\x00\x01" + b"\x0c\x00\x01" * 80 + b"\x00" * 81
    )
    seeds["framed_negative_string"] = struct.pack(">I", 20) + (
        b"\x80\x01\x00\x01\x00\x00\x00\x04echo\x00\x00\x00\x01" + b"\x0b\x00\x01\xff\xff\xff\xfe"
    )[:20]
    seeds["unframed_huge_list"] = b"\x80\x01\x00\x01\x00\x00\x00\x04echo\x00\x00\x00\x01\x0f\x00\x02\x08\x7f\xff\xff\xff"
    for name, data in sorted(seeds.items()):
        (OUT / name).write_bytes(data)
    print(f"wrote {len(seeds)} seeds to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
