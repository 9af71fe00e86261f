"""Personal data at rest: SM4-GCM under a data key that lives with the node's keys.

A sealed value is ``MAGIC ‖ key id (4 bytes) ‖ IV (12) ‖ ciphertext ‖ tag (16)``; the
additional data names where the value belongs (``table.column:row``), so a value copied into
another row or column does not open. The newest key seals; every key kept opens, so a rotation
needs no rewrite of what is stored. A value without the magic is one written before values were
sealed, and reads as it is.

Why a key of its own and not the SM2 keys: values are read and written on every request; a
symmetric key is the standard answer (GB/T 39786 at rest: SM4 for confidentiality, GCM's tag
for integrity). The person lookup keeps its own HMAC key (``gateway.audit.log.person_key``).
"""

from __future__ import annotations

import secrets
import time

from security.backend import GCM_IV_BYTES, GCM_TAG_BYTES, SM4_KEY_BYTES, CryptoBackend
from security.digest import sm3

MAGIC = b"XGWR\x01"
_ID_BYTES = 4
_HEAD = len(MAGIC) + _ID_BYTES + GCM_IV_BYTES


class DataKeys:
    """The node's data keys: ``keys`` by id, the last one seals."""

    def __init__(self, keys: list[bytes], backend: CryptoBackend) -> None:
        if not keys or any(len(k) != SM4_KEY_BYTES for k in keys):
            raise ValueError(f"data keys are {SM4_KEY_BYTES} bytes, and at least one is needed")
        self.backend = backend
        self._keys = {key_id(k): k for k in keys}
        self._current = key_id(keys[-1])
        # what sealing has cost this process, for its operators and the benchmarks
        self.sealed = self.opened = 0
        self.seconds = 0.0

    @property
    def current_id(self) -> str:
        return self._current.hex()

    def seal(self, plaintext: bytes, where: bytes) -> bytes:
        began = time.perf_counter()
        iv = secrets.token_bytes(GCM_IV_BYTES)
        ciphertext, tag = self.backend.sm4_gcm_encrypt(
            self._keys[self._current], iv, plaintext, where
        )
        self.sealed += 1
        self.seconds += time.perf_counter() - began
        return MAGIC + self._current + iv + ciphertext + tag

    def open(self, value: bytes, where: bytes) -> bytes:
        """The plaintext; a value written before sealing as it is; ValueError if it was
        changed, moved, or sealed under a key no longer kept."""
        if not value.startswith(MAGIC):
            return value
        ident = value[len(MAGIC) : len(MAGIC) + _ID_BYTES]
        key = self._keys.get(ident)
        if key is None or len(value) < _HEAD + GCM_TAG_BYTES:
            raise ValueError("a stored value sealed under an unknown data key")
        began = time.perf_counter()
        iv = value[len(MAGIC) + _ID_BYTES : _HEAD]
        plaintext = self.backend.sm4_gcm_decrypt(
            key, iv, value[_HEAD:-GCM_TAG_BYTES], value[-GCM_TAG_BYTES:], where
        )
        self.opened += 1
        self.seconds += time.perf_counter() - began
        return plaintext


def key_id(key: bytes) -> bytes:
    return sm3(b"xgw data key\x00" + key)[:_ID_BYTES]


def new_data_key() -> bytes:
    return secrets.token_bytes(SM4_KEY_BYTES)
