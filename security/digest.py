"""SM3 for identifiers and chains (key ids, log hashes): one implementation, the C one.

Digests do not depend on the configured backend: any correct SM3 gives the same bytes. The
system OpenSSL's SM3 through ``hashlib`` is used where present (cheapest per call, it matters for
millions of log entries); ``cryptography``'s otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes


def _cryptography_sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _pick() -> Callable[[bytes], bytes]:
    try:
        template = hashlib.new("sm3")
    except ValueError:
        return _cryptography_sm3
    if template.copy().digest() != _cryptography_sm3(b""):
        return _cryptography_sm3

    def hashlib_sm3(data: bytes) -> bytes:
        digest = template.copy()
        digest.update(data)
        return digest.digest()

    return hashlib_sm3


sm3: Callable[[bytes], bytes] = _pick()
SM3_HEX = r"[0-9a-f]{64}"  # an SM3 digest as key ids, envelopes and the exchange log write it


def sm3_hex(data: bytes) -> str:
    return sm3(data).hex()


class Sm3Stream:
    """SM3 over bytes given piece by piece (a material's stream): the same digest as ``sm3``."""

    def __init__(self) -> None:
        self._hash = hashes.Hash(hashes.SM3())
        self.length = 0

    def update(self, data: bytes | bytearray) -> None:
        self._hash.update(bytes(data))
        self.length += len(data)

    def hexdigest(self) -> str:
        return self._hash.finalize().hex()
