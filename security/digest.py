"""SM3 for identifiers and chains (key ids, log hashes): one implementation, the C one.

Digests do not depend on the configured backend: any correct SM3 gives the same bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def sm3_hex(data: bytes) -> str:
    return sm3(data).hex()
