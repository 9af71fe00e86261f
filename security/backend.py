"""One interface for the 国密 primitives, two implementations (``XGW_CRYPTO_BACKEND``).

- ``native``: SM3, HMAC-SM3 and SM4-GCM from ``cryptography`` (its bundled OpenSSL), SM2 from the
  system's OpenSSL libcrypto (≥ 3.0) through ctypes. Chosen by measurement: see README "Crypto".
- ``gmssl``: the card's pure-Python package, portable wherever Python runs; slow, and fixed where
  it is wrong (see ``security.gmssl_backend``).

Keys cross this interface as raw values: the private scalar ``d`` and the uncompressed public
point ``04‖x‖y``. Signatures are DER ``SEQUENCE{r,s}``; SM2 ciphertexts are GM/T 0009 DER C1C3C2.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import cache
from typing import Protocol

from security.curve import N
from security.errors import BACKEND_UNAVAILABLE, SecurityError

SM4_KEY_BYTES = 16
GCM_IV_BYTES = 12
GCM_TAG_BYTES = 16


class CryptoBackend(Protocol):
    name: str
    # Whether SM2 runs in C without the GIL: only then can another thread do it beside the
    # event loop (security.keypool); in pure Python it would only take turns with the loop.
    parallel_sm2: bool

    def sm3(self, data: bytes) -> bytes: ...

    def hmac_sm3(self, key: bytes, data: bytes) -> bytes: ...

    def sm4_block_encryptor(self, key: bytes) -> Callable[[bytes], bytes]:
        """Raw SM4 on 16-byte blocks (ECB); for the standard vectors, not for messages."""
        ...

    def sm4_gcm_encrypt(
        self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes
    ) -> tuple[bytes, bytes]:
        """(ciphertext, 16-byte tag)."""
        ...

    def sm4_gcm_decrypt(
        self, key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
    ) -> bytes:
        """Plaintext, or ValueError when the tag does not verify."""
        ...

    def sm2_public_key(self, private: int) -> bytes: ...

    def sm2_sign(self, private: int, public: bytes, message: bytes, distid: bytes) -> bytes: ...

    def sm2_verify(self, public: bytes, message: bytes, signature: bytes, distid: bytes) -> bool:
        """False for any bad signature, malformed DER included; never raises for bad input."""
        ...

    def sm2_encrypt(self, public: bytes, plaintext: bytes) -> bytes: ...

    def sm2_decrypt(self, private: int, ciphertext: bytes) -> bytes:
        """Plaintext, or ValueError for anything wrong with the ciphertext."""
        ...


def random_private_scalar() -> int:
    """d in [1, n-2] from the OS CSPRNG (GB/T 32918.1 key generation)."""
    return secrets.randbelow(N - 2) + 1


@cache
def get_backend(name: str = "native") -> CryptoBackend:
    if name == "native":
        from security.native_backend import NativeBackend

        return NativeBackend()
    if name == "gmssl":
        from security.gmssl_backend import GmsslBackend

        return GmsslBackend()
    raise SecurityError(BACKEND_UNAVAILABLE, f"unknown crypto backend {name!r}")
