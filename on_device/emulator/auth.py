"""RSA authentication of ADB hosts: tokens, signature checks against an authorized-keys file in
Android's adbkey.pub format, and (only when configured) acceptance of a host's offered key."""

from __future__ import annotations

import base64
import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from gemma4_common.fsutil import atomic_write_text

from .protocol import TOKEN_SIZE

log = logging.getLogger(__name__)

# DER prefix of a SHA-1 DigestInfo: adb signs the 20-byte token as if it were a SHA-1 digest.
_SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


@dataclass(frozen=True)
class PublicKey:
    n: int
    e: int
    comment: str
    encoded: str  # the base64 blob as it appears in adbkey.pub

    @property
    def bits(self) -> int:
        return self.n.bit_length()


def parse_android_pubkey(text: str | bytes | bytearray) -> PublicKey:
    """Parse one adbkey.pub line: base64 of struct RSAPublicKey, then an optional comment.

    The struct is: u32 word count, u32 n0inv, u32 modulus[words] (little endian), u32 rr[words],
    u32 exponent.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).split(b"\0", 1)[0].decode("ascii", "replace")
    text = text.strip()
    if not text:
        raise ValueError("empty key")
    blob, _, comment = text.partition(" ")
    raw = base64.b64decode(blob, validate=True)
    if len(raw) < 12:
        raise ValueError("key blob too short")
    (words,) = struct.unpack_from("<I", raw, 0)
    if not 16 <= words <= 512 or len(raw) != 4 + 4 + words * 8 + 4:
        raise ValueError(f"key blob of {len(raw)} bytes does not match {words} words")
    n = int.from_bytes(raw[8:8 + words * 4], "little")
    (e,) = struct.unpack_from("<I", raw, 8 + words * 8)
    if n <= 0 or e <= 1:
        raise ValueError("degenerate key")
    return PublicKey(n=n, e=e, comment=comment.strip(), encoded=blob)


def verify_signature(key: PublicKey, token: bytes, signature: bytes) -> bool:
    """RSA PKCS#1 v1.5 verification of `signature` over the token as a SHA-1 digest."""
    k = (key.n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    em = pow(s, key.e, key.n).to_bytes(k, "big")
    suffix = _SHA1_DIGEST_INFO + token
    pad_len = k - 3 - len(suffix)
    if pad_len < 8:
        return False
    expected = b"\x00\x01" + b"\xff" * pad_len + b"\x00" + suffix
    return em == expected


def new_token() -> bytes:
    return os.urandom(TOKEN_SIZE)


class AuthorizedKeys:
    """The keys this device trusts. Backed by a file when one is given; accepted keys are added."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._keys: list[PublicKey] = []
        self.reload()

    def _file_state(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat() if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def reload(self) -> None:
        self._state = self._file_state()
        keys: list[PublicKey] = []
        if self.path and self.path.exists():
            for lineno, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                try:
                    keys.append(parse_android_pubkey(line))
                except (ValueError, base64.binascii.Error) as e:
                    log.warning("%s:%d: skipping unreadable key (%s)", self.path, lineno, e)
        with self._lock:
            self._keys = keys

    def keys(self) -> list[PublicKey]:
        with self._lock:
            return list(self._keys)

    def match(self, token: bytes, signature: bytes) -> PublicKey | None:
        # Like adbd, read the file at each attempt so that keys added meanwhile count.
        if self.path is not None and self._file_state() != self._state:
            self.reload()
        for key in self.keys():
            if verify_signature(key, token, signature):
                return key
        return None

    def add(self, key: PublicKey) -> None:
        """Trust `key` from now on ("always allow from this computer")."""
        with self._lock:
            if any(k.n == key.n and k.e == key.e for k in self._keys):
                return
            self._keys.append(key)
            if self.path is not None:
                lines = [f"{k.encoded} {k.comment}".rstrip() for k in self._keys]
                atomic_write_text(self.path, "\n".join(lines) + "\n")
                self._state = self._file_state()
