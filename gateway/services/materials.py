"""Materials (申请材料) through the store: taking an upload in, and sealing a case's materials for
a partner (XGW-ENV/2). Thin shells: the type is ``mappings.materials.sniff``'s, the sealing
``security.stream``'s; here only the bytes move, a chunk at a time, never a material whole.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from gateway.core.problems import FieldProblem, GatewayError
from gateway.storage import MaterialRecord, Store, Transaction
from mappings.materials import SNIFF_BYTES, sniff
from security import envelope as env
from security.backend import CryptoBackend
from security.digest import Sm3Stream
from security.sealing import Sealer
from security.stream import CHUNK_BYTES, MaterialBroken, MaterialOpening, MaterialSealing

# Chunks written (and read) per round trip to the store: 1 MiB, so an upload costs a
# transaction per MiB and memory stays a few chunks whatever the material's size.
CHUNKS_PER_WRITE = 16


def too_large(code: str, limit: int) -> GatewayError:
    mib = max(1, limit // (1024 * 1024))
    return GatewayError(
        "MATERIAL_TOO_LARGE",
        413,
        "Material too large",
        f"material {code} is over {mib} MiB",
        [FieldProblem(f"materials.{code}", f"文件超过 {mib} MiB", "MATERIAL_TOO_LARGE")],
    )


async def take_upload(
    store: Store, code: str, pieces: AsyncIterator[bytes], limit: int
) -> MaterialRecord:
    """Stores one uploaded material as it arrives (sealed at rest, a chunk at a time) and
    tells its type from its content. ``MATERIAL_TOO_LARGE`` (413) as soon as it passes
    ``limit``. On any failure nothing of it stays; the caller discards it once filed or
    refused (``Store.discard_materials``)."""
    material_id = secrets.token_hex(16)
    await store.begin_material(material_id, code)
    digest, size, index = Sm3Stream(), 0, 0
    head = b""
    buffer = bytearray()
    pending: list[bytes] = []
    try:
        async for piece in pieces:
            size += len(piece)
            if size > limit:
                raise too_large(code, limit)
            if len(head) < SNIFF_BYTES:
                head += piece[: SNIFF_BYTES - len(head)]
            digest.update(piece)
            buffer += piece
            while len(buffer) >= CHUNK_BYTES:
                pending.append(bytes(buffer[:CHUNK_BYTES]))
                del buffer[:CHUNK_BYTES]
            if len(pending) >= CHUNKS_PER_WRITE:
                await store.add_material_chunks(material_id, index, pending)
                index += len(pending)
                pending = []
        if buffer or index + len(pending) == 0:
            pending.append(bytes(buffer))
        if pending:
            await store.add_material_chunks(material_id, index, pending)
            index += len(pending)
        kind = sniff(head) or "unknown"
        sm3 = digest.hexdigest()
        await store.finish_material(material_id, kind, size, index, sm3)
    except BaseException:
        await store.discard_materials([material_id])
        raise
    return MaterialRecord(material_id, None, code, kind, size, index, sm3, None, "uploaded", 0.0)


async def seal_for_partner(
    tx: Transaction,
    sealer: Sealer,
    region: str,
    msg_id: str,
    materials: Sequence[MaterialRecord],
) -> tuple[env.WrappedKey | None, tuple[env.ManifestEntry, ...]]:
    """Seals each file under a new content key for ``region`` into the outbox (what will be
    sent, byte for byte, however often): the key the message is then sealed with, and its
    manifest (no key and no manifest without files). Each file is checked against what was
    stored at its upload (its size and SM3), so a material changed at rest is not sent."""
    if not materials:
        return None, ()
    wrapped = sealer.content_key(region)
    entries = []
    for material in materials:
        sealing = MaterialSealing(wrapped.key, msg_id, material.code, material.kind, sealer.backend)
        written, sealed = 0, []
        async for chunk in stored_plaintext(tx.material_chunks, material):
            sealed.append(sealing.add(chunk))
            if len(sealed) >= CHUNKS_PER_WRITE:
                written, sealed = await _put(tx, msg_id, material.code, written, sealed), []
        last, entry = sealing.finish()
        await _put(tx, msg_id, material.code, written, [*sealed, last])
        if entry.size != material.size:
            raise ValueError(f"material {material.id} is not what was uploaded")
        entries.append(entry)
    return wrapped, tuple(entries)


async def _put(tx: Transaction, msg_id: str, code: str, start: int, pieces: list[bytes]) -> int:
    kept = [piece for piece in pieces if piece]
    if kept:
        await tx.put_outbox_material(msg_id, code, start, kept)
    return start + len(kept)


async def sealed_stream(store: Store, msg_id: str, code: str) -> AsyncIterator[bytes]:
    """A material as sealed for the partner, read from the outbox a few pieces at a time."""
    start = 0
    while True:
        pieces = await store.outbox_material(msg_id, code, start, CHUNKS_PER_WRITE)
        for piece in pieces:
            yield piece
        if len(pieces) < CHUNKS_PER_WRITE:
            return
        start += len(pieces)


class IncomingParts(Protocol):
    """The parts that follow a partner's envelope (the HTTP shell's multipart reader)."""

    async def next_part(self) -> tuple[str, AsyncIterator[bytes]] | None:
        """(its name, its bytes as they arrive), or None after the last."""
        ...


async def take_sealed(
    store: Store,
    backend: CryptoBackend,
    content_key: bytes,
    envelope: env.Envelope,
    parts: IncomingParts | None,
    limit: int,
) -> list[MaterialRecord]:
    """Opens each material a partner's XGW-ENV/2 message names, in order, as it arrives, and
    stores its plaintext sealed at rest (our data key), a chunk at a time. ``MaterialBroken``
    with its stable code for a material that does not match the signed manifest (nothing of the
    message's materials then stays)."""
    taken: list[MaterialRecord] = []
    try:
        for entry in envelope.manifest:
            if entry.size > limit:
                raise MaterialBroken(
                    "MATERIAL_TOO_LARGE", f"{entry.code} is over {limit // (1024 * 1024)} MiB"
                )
            part = await parts.next_part() if parts is not None else None
            if part is None or part[0] != entry.code:
                raise MaterialBroken("MATERIAL_TRUNCATED", f"{entry.code} did not follow")
            opening = MaterialOpening(content_key, envelope.msg_id, entry, backend)
            taken.append(await take_upload(store, entry.code, _opened(part[1], opening), limit))
        if parts is not None and await parts.next_part() is not None:
            raise MaterialBroken("MATERIAL_UNEXPECTED", "a part the manifest does not name")
    except BaseException:
        await store.discard_materials([m.id for m in taken])
        raise
    return taken


async def _opened(sealed: AsyncIterator[bytes], opening: MaterialOpening) -> AsyncIterator[bytes]:
    async for piece in sealed:
        plain = opening.add(piece)
        if plain:
            yield plain
    yield opening.finish()


# How a material's stored chunks are read: a transaction's, or the store's outside one.
ChunkReader = Callable[[str, int, int], Awaitable[list[bytes]]]


async def stored_plaintext(read: ChunkReader, material: MaterialRecord) -> AsyncIterator[bytes]:
    """A stored material's bytes, a few chunks at a time; ValueError at its end if they are not
    what was stored (its SM3): nothing sealed from them is sent, a receiver sees a broken body."""
    check, start = Sm3Stream(), 0
    while start < material.chunks:
        chunks = await read(material.id, start, CHUNKS_PER_WRITE)
        if not chunks:
            raise ValueError(f"material {material.id} lacks chunks from {start}")
        for chunk in chunks:
            check.update(chunk)
            yield chunk
        start += len(chunks)
    if check.hexdigest() != material.sm3:
        raise ValueError(f"material {material.id} is not what was stored")
