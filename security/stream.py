"""Sealing a material as a stream of SM4-GCM chunks (for XGW-ENV/2; spec: docs/envelope.md §11).

The construction is STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015: "Online
authenticated-encryption and its nonce-reuse misuse-resistance"), as Tink's streaming AEAD and
age use it, over SM4-GCM:

- each material has a random 7-byte ``prefix``; its key is
  ``K_m = HMAC-SM3(K, "XGW-ENV/2 material" ‖ prefix)[:16]``, where ``K`` is the message's
  content key — so no two materials, nor a material and the message body, share a key;
- plaintext is cut into chunks of ``CHUNK_BYTES`` (the last may be shorter, never empty unless
  the material is); chunk ``i`` (from 0) is SM4-GCM under ``K_m`` with the 12-byte IV
  ``prefix ‖ i (4 bytes, big-endian) ‖ last`` (``last`` is 0x01 for the final chunk, else 0x00)
  and the material's ``aad`` (the message id and the material's code, from the signed manifest);
- a sealed chunk is ``ciphertext ‖ tag (16)``: every one but the last is ``CHUNK_BYTES + 16``
  long, so the receiver knows the last by the end of the stream.

What it guarantees: a chunk moved (its index is in its IV), dropped (the next opens under the
wrong index), repeated, or the stream cut at a chunk boundary (the new final chunk was sealed
with ``last`` = 0) fails to open; a chunk from another material or message fails (another key,
another ``aad``). Nothing is released before its own tag verifies, and memory is one chunk.

Why not a digest of the plaintext beside it: SM3 of a low-entropy plaintext can be confirmed by
anyone who guesses it. The manifest instead carries the SM3 of the *sealed* stream (what was
exchanged, checkable by an auditor without any key) and the tags do the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator

from security import envelope as env
from security.backend import GCM_TAG_BYTES, SM4_KEY_BYTES, CryptoBackend
from security.digest import Sm3Stream

CHUNK_BYTES = 64 * 1024
SEALED_CHUNK_BYTES = CHUNK_BYTES + GCM_TAG_BYTES
PREFIX_BYTES = 7
_LABEL = b"XGW-ENV/2 material"


class StreamBroken(ValueError):
    """A sealed stream that does not open: changed, reordered, cut short or not ours."""


def material_key(content_key: bytes, prefix: bytes, backend: CryptoBackend) -> bytes:
    if len(prefix) != PREFIX_BYTES:
        raise ValueError(f"a material's prefix is {PREFIX_BYTES} bytes")
    return backend.hmac_sm3(content_key, _LABEL + prefix)[:SM4_KEY_BYTES]


def _iv(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise ValueError("a material has at most 2**32 chunks")
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class StreamSealer:
    """Seals one material chunk by chunk: ``seal(chunk)`` for each full chunk, then ``finish``."""

    def __init__(
        self,
        content_key: bytes,
        aad: bytes,
        backend: CryptoBackend,
        prefix: bytes | None = None,  # given only by test vectors
    ) -> None:
        self.prefix = prefix if prefix is not None else secrets.token_bytes(PREFIX_BYTES)
        self._key, self._aad, self._backend = (
            material_key(content_key, self.prefix, backend),
            aad,
            backend,
        )
        self._index = 0
        self._finished = False

    def _one(self, chunk: bytes, last: bool) -> bytes:
        if self._finished:
            raise ValueError("the stream is finished")
        ciphertext, tag = self._backend.sm4_gcm_encrypt(
            self._key, _iv(self.prefix, self._index, last), chunk, self._aad
        )
        self._index += 1
        self._finished = last
        return ciphertext + tag

    def seal(self, chunk: bytes) -> bytes:
        """A full chunk that is not the last."""
        if len(chunk) != CHUNK_BYTES:
            raise ValueError(f"only the last chunk may be shorter than {CHUNK_BYTES} bytes")
        return self._one(chunk, last=False)

    def finish(self, chunk: bytes) -> bytes:
        """The last chunk (``CHUNK_BYTES`` at most; empty only for an empty material)."""
        if len(chunk) > CHUNK_BYTES:
            raise ValueError(f"a chunk is {CHUNK_BYTES} bytes at most")
        return self._one(chunk, last=True)


class StreamOpener:
    """Opens one material chunk by chunk: ``open(sealed)`` for each, ``last`` on the final."""

    def __init__(
        self, content_key: bytes, prefix: bytes, aad: bytes, backend: CryptoBackend
    ) -> None:
        self._key, self._prefix, self._aad, self._backend = (
            material_key(content_key, prefix, backend),
            prefix,
            aad,
            backend,
        )
        self._index = 0
        self._finished = False

    def open(self, sealed: bytes, last: bool) -> bytes:
        if self._finished:
            raise StreamBroken("data after the material's last chunk")
        if len(sealed) < GCM_TAG_BYTES or (not last and len(sealed) != SEALED_CHUNK_BYTES):
            raise StreamBroken(f"chunk {self._index} has the wrong length")
        try:
            plaintext = self._backend.sm4_gcm_decrypt(
                self._key,
                _iv(self._prefix, self._index, last),
                sealed[:-GCM_TAG_BYTES],
                sealed[-GCM_TAG_BYTES:],
                self._aad,
            )
        except ValueError:
            raise StreamBroken(
                f"chunk {self._index} does not open (changed, moved, dropped, or the stream was cut)"
            ) from None
        self._index += 1
        self._finished = last
        return plaintext


def seal_stream(
    content_key: bytes,
    aad: bytes,
    chunks: Iterable[bytes],
    backend: CryptoBackend,
    prefix: bytes | None = None,
) -> tuple[bytes, Iterator[bytes]]:
    """(prefix, the sealed chunks) of a material given as plaintext pieces of any sizes."""
    sealer = StreamSealer(content_key, aad, backend, prefix)

    def sealed() -> Iterator[bytes]:
        for chunk, last in _rechunked(chunks, CHUNK_BYTES):
            yield sealer.finish(chunk) if last else sealer.seal(chunk)

    return sealer.prefix, sealed()


def open_stream(
    content_key: bytes,
    prefix: bytes,
    aad: bytes,
    sealed: Iterable[bytes],
    backend: CryptoBackend,
) -> Iterator[bytes]:
    """The plaintext chunks of a sealed stream given as pieces of any sizes; ``StreamBroken``
    as soon as a chunk does not open, or when the stream ends before its last chunk."""
    opener = StreamOpener(content_key, prefix, aad, backend)
    for chunk, last in _rechunked(sealed, SEALED_CHUNK_BYTES):
        yield opener.open(chunk, last)


def _rechunked(pieces: Iterable[bytes], size: int) -> Iterator[tuple[bytes, bool]]:
    """Pieces of any sizes as chunks of ``size`` and whether each is the last (which may be
    shorter, or empty when there was nothing); one chunk is kept back until more comes, since
    only the end tells which is last. Linear in the bytes, whatever the pieces' sizes."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        start = 0
        while len(buffer) - start > size:
            yield bytes(buffer[start : start + size]), False
            start += size
        del buffer[:start]
    yield bytes(buffer), True


def sealed_length(size: int) -> int:
    """The sealed stream's length for ``size`` plaintext bytes (an empty material: one tag)."""
    chunks = max(1, -(-size // CHUNK_BYTES))
    return size + chunks * GCM_TAG_BYTES


class MaterialSealing:
    """Seals one material of an XGW-ENV/2 message from plaintext pieces of any sizes, keeping
    what its manifest entry states (size, SM3 of the sealed stream). ``add`` and ``finish``
    return the sealed bytes ready so far."""

    def __init__(
        self, content_key: bytes, msg_id: str, code: str, kind: str, backend: CryptoBackend
    ) -> None:
        self.code, self.kind = code, kind
        self._sealer = StreamSealer(content_key, env.material_aad(msg_id, code), backend)
        self._buffer = bytearray()
        self._size = 0
        self._digest = Sm3Stream()

    def add(self, piece: bytes) -> bytes:
        self._buffer += piece
        self._size += len(piece)
        out = bytearray()
        start = 0
        while len(self._buffer) - start > CHUNK_BYTES:
            out += self._sealer.seal(bytes(self._buffer[start : start + CHUNK_BYTES]))
            start += CHUNK_BYTES
        del self._buffer[:start]
        self._digest.update(out)
        return bytes(out)

    def finish(self) -> tuple[bytes, env.ManifestEntry]:
        last = self._sealer.finish(bytes(self._buffer))
        self._digest.update(last)
        entry = env.ManifestEntry(
            self.code, self.kind, self._size, self._sealer.prefix, self._digest.hexdigest()
        )
        return last, entry


class MaterialBroken(ValueError):
    """A material that does not match its manifest entry; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class MaterialOpening:
    """Opens one material of an XGW-ENV/2 message as its sealed bytes arrive, in pieces of any
    sizes: ``add`` returns the plaintext released so far (each chunk only once its tag
    verified), ``finish`` checks the end. Raises ``MaterialBroken``: MATERIAL_TOO_LONG as soon
    as more arrives than the manifest's size allows, MATERIAL_BROKEN for a chunk that does not
    open, MATERIAL_TRUNCATED for a stream that ends early, MATERIAL_DIGEST for a stream whose
    SM3 is not the manifest's."""

    def __init__(
        self, content_key: bytes, msg_id: str, entry: env.ManifestEntry, backend: CryptoBackend
    ) -> None:
        self.entry = entry
        self._opener = StreamOpener(
            content_key, entry.prefix, env.material_aad(msg_id, entry.code), backend
        )
        self._expected = sealed_length(entry.size)
        self._buffer = bytearray()
        self._received = 0
        self._digest = Sm3Stream()

    def add(self, piece: bytes) -> bytes:
        self._received += len(piece)
        if self._received > self._expected:
            raise MaterialBroken(
                "MATERIAL_TOO_LONG", f"{self.entry.code} is longer than its manifest says"
            )
        self._digest.update(piece)
        self._buffer += piece
        out = bytearray()
        start = 0
        # a full sealed chunk that is not the stream's end: the end is known by the length
        while len(self._buffer) - start >= SEALED_CHUNK_BYTES and (
            self._received - len(self._buffer) + start + SEALED_CHUNK_BYTES < self._expected
        ):
            out += self._open(bytes(self._buffer[start : start + SEALED_CHUNK_BYTES]), False)
            start += SEALED_CHUNK_BYTES
        del self._buffer[:start]
        return bytes(out)

    def finish(self) -> bytes:
        if self._received != self._expected:
            raise MaterialBroken(
                "MATERIAL_TRUNCATED", f"{self.entry.code} ended before its manifest's size"
            )
        last = self._open(bytes(self._buffer), True)
        if self._digest.hexdigest() != self.entry.sealed_sm3:
            raise MaterialBroken(
                "MATERIAL_DIGEST", f"{self.entry.code} is not the stream its manifest names"
            )
        return last

    def _open(self, sealed: bytes, last: bool) -> bytes:
        try:
            return self._opener.open(sealed, last)
        except StreamBroken as exc:
            raise MaterialBroken("MATERIAL_BROKEN", f"{self.entry.code}: {exc}") from None
