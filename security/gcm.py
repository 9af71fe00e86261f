"""GCM (NIST SP 800-38D) over any 128-bit block cipher, in pure Python.

Only the portable ``gmssl`` backend uses it; the native backend has SM4-GCM in C. 96-bit IVs only,
which is all the envelope uses.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

_R = 0xE1 << 120


def _gf_mult(x: int, y: int) -> int:
    z, v = 0, y
    for bit in range(127, -1, -1):
        if (x >> bit) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _ghash(h: int, aad: bytes, ciphertext: bytes) -> int:
    y = 0
    for data in (aad, ciphertext):
        for offset in range(0, len(data), 16):
            block = data[offset : offset + 16].ljust(16, b"\x00")
            y = _gf_mult(y ^ int.from_bytes(block, "big"), h)
    lengths = (len(aad) * 8).to_bytes(8, "big") + (len(ciphertext) * 8).to_bytes(8, "big")
    return _gf_mult(y ^ int.from_bytes(lengths, "big"), h)


def _ctr(encrypt_block: Callable[[bytes], bytes], j0: bytes, data: bytes) -> bytes:
    prefix, counter = j0[:12], int.from_bytes(j0[12:], "big")
    out = bytearray()
    for offset in range(0, len(data), 16):
        counter = (counter + 1) & 0xFFFFFFFF
        stream = encrypt_block(prefix + counter.to_bytes(4, "big"))
        chunk = data[offset : offset + 16]
        out += bytes(a ^ b for a, b in zip(chunk, stream, strict=False))
    return bytes(out)


def _tag(encrypt_block: Callable[[bytes], bytes], j0: bytes, aad: bytes, ct: bytes) -> bytes:
    h = int.from_bytes(encrypt_block(b"\x00" * 16), "big")
    s = _ghash(h, aad, ct)
    return (int.from_bytes(encrypt_block(j0), "big") ^ s).to_bytes(16, "big")


def encrypt(
    encrypt_block: Callable[[bytes], bytes], iv: bytes, plaintext: bytes, aad: bytes
) -> tuple[bytes, bytes]:
    if len(iv) != 12:
        raise ValueError("GCM IV must be 12 bytes")
    j0 = iv + b"\x00\x00\x00\x01"
    ciphertext = _ctr(encrypt_block, j0, plaintext)
    return ciphertext, _tag(encrypt_block, j0, aad, ciphertext)


def decrypt(
    encrypt_block: Callable[[bytes], bytes], iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
) -> bytes:
    if len(iv) != 12 or len(tag) != 16:
        raise ValueError("bad GCM IV or tag length")
    j0 = iv + b"\x00\x00\x00\x01"
    if not hmac.compare_digest(_tag(encrypt_block, j0, aad, ciphertext), tag):
        raise ValueError("tag mismatch")
    return _ctr(encrypt_block, j0, ciphertext)
