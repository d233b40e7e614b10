"""ADB wire format on the device side: packet constants, header packing and validation.

Facts from AOSP protocol.txt: a 24-byte little-endian header (command, arg0, arg1, data length,
data checksum = byte sum of the payload, magic = command ^ 0xffffffff) followed by the payload.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_SYNC = _cmd(b"SYNC")
A_CNXN = _cmd(b"CNXN")
A_AUTH = _cmd(b"AUTH")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_CLSE = _cmd(b"CLSE")
A_WRTE = _cmd(b"WRTE")
A_STLS = _cmd(b"STLS")

COMMAND_NAMES = {
    A_SYNC: "SYNC", A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN",
    A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE", A_STLS: "STLS",
}

# Protocol versions: 0x01000001 lets both sides skip payload checksums once negotiated.
A_VERSION_MIN = 0x01000000
A_VERSION_SKIP_CHECKSUM = 0x01000001
A_VERSION = 0x01000001

MAX_PAYLOAD_V1 = 4 * 1024
MAX_PAYLOAD = 1024 * 1024
# The smallest max-payload a host may ask for; below it no service could make progress.
MIN_HOST_PAYLOAD = 256

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20

HEADER = struct.Struct("<6I")
HEADER_SIZE = HEADER.size


class ProtocolError(Exception):
    """The peer sent something that is not ADB; the connection is dropped."""


@dataclass
class Header:
    command: int
    arg0: int
    arg1: int
    length: int
    check: int
    magic: int

    @property
    def name(self) -> str:
        return command_name(self.command)


def command_name(command: int) -> str:
    return COMMAND_NAMES.get(command, f"0x{command:08x}")


_np = None


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Byte sum of the payload, as the v1 protocol defines it."""
    n = len(data)
    if n < 65536:
        return sum(data) & 0xFFFFFFFF
    global _np
    if _np is None:
        try:
            import numpy

            _np = numpy
        except ImportError:  # pragma: no cover - numpy is a project dependency
            _np = False
    if _np:
        return int(_np.frombuffer(data, dtype=_np.uint8).sum(dtype=_np.uint64)) & 0xFFFFFFFF
    return sum(data) & 0xFFFFFFFF


def pack(command: int, arg0: int, arg1: int, payload: bytes = b"", with_checksum: bool = True) -> bytes:
    check = checksum(payload) if (with_checksum and payload) else 0
    return HEADER.pack(command, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF, len(payload), check,
                       command ^ 0xFFFFFFFF) + bytes(payload)


def parse_header(raw: bytes, max_payload: int) -> Header:
    """Validate a header: known command, matching magic, payload no longer than allowed."""
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"short header ({len(raw)} bytes)")
    h = Header(*HEADER.unpack(raw))
    if h.command not in COMMAND_NAMES:
        raise ProtocolError(f"unknown command 0x{h.command:08x}")
    if h.magic != h.command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{h.magic:08x} for {h.name}")
    if h.length > max_payload:
        raise ProtocolError(f"{h.name} payload of {h.length} bytes exceeds the maximum {max_payload}")
    return h


def check_payload(h: Header, payload: bytes | bytearray, skip_allowed: bool) -> None:
    """Verify the payload checksum. With a negotiated skip-checksum version a zero is accepted."""
    if not payload:
        return
    if h.check == 0 and skip_allowed:
        return
    if checksum(payload) != h.check:
        raise ProtocolError(f"bad checksum on {h.name}")
