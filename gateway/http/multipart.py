"""Reading a multipart body as it arrives: a part's bytes up to a bound, a part's pieces, and a
message whose first part is an envelope (or a SOAP document) and whose materials follow —
named by their code (REST ``multipart/form-data``) or by the Content-ID the SOAP XML's
``Material`` elements give them (MTOM/XOP). Shared by the windows' API, the console, the
partner API and the partner simulator, which read the same shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import BodyPartReader, MultipartReader

from gateway.core.problems import body_too_large
from security.stream import MaterialBroken

CHUNK = 64 * 1024
# What aiohttp raises while reading a body that is malformed or breaks off.
READ_ERRORS = (ValueError, AssertionError, aiohttp.ClientPayloadError, ConnectionError)


async def read_at_most(pieces: AsyncIterator[bytes], limit: int) -> bytes:
    """Every piece, joined; BODY_TOO_LARGE (413) as soon as more than ``limit`` arrived."""
    chunks, size = [], 0
    async for chunk in pieces:
        size += len(chunk)
        if size > limit:
            raise body_too_large()
        chunks.append(chunk)
    return b"".join(chunks)


async def part_pieces(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def part_bytes(part: BodyPartReader, limit: int) -> bytes:
    return await read_at_most(part_pieces(part), limit)


class MaterialParts:
    """A message's parts: ``first`` (the envelope, or the SOAP XML), then each material as the
    reader opens it. A body that breaks off is ``MaterialBroken("MATERIAL_TRUNCATED")``."""

    def __init__(self, reader: MultipartReader, xop: bool = False) -> None:
        self.reader, self.xop = reader, xop
        self.codes: dict[str, str] = {}  # XOP: Content-ID -> the material's code

    def name_by_content_id(self, included: list[tuple[str, str]]) -> None:
        self.codes = {cid: code for code, cid in included}

    async def first(self, limit: int, name: str | None = None) -> bytes:
        """The first part, at most ``limit`` bytes: the part ``name`` (REST's envelope), or
        whatever its name (MTOM/XOP's root). ``MULTIPART_MALFORMED`` if it is not there."""
        part = await self._next()
        if part is None or (name is not None and part.name != name):
            raise MaterialBroken("MULTIPART_MALFORMED", f"the first part must be {name or 'XML'}")
        try:
            return await part_bytes(part, limit)
        except READ_ERRORS:
            raise MaterialBroken("MATERIAL_TRUNCATED", "the message broke off") from None

    async def next_part(self) -> tuple[str, AsyncIterator[bytes]] | None:
        """(the material's code, its bytes as they arrive), or None after the last part."""
        part = await self._next()
        if part is None:
            return None
        if self.xop:
            cid = part.headers.get("Content-ID", "").strip().removeprefix("<").removesuffix(">")
            return self.codes.get(cid, ""), _pieces_or_broken(part)
        return part.name or "", _pieces_or_broken(part)

    async def _next(self) -> BodyPartReader | None:
        try:
            part = await self.reader.next()
        except READ_ERRORS:
            raise MaterialBroken("MATERIAL_TRUNCATED", "the message broke off") from None
        if part is not None and not isinstance(part, BodyPartReader):
            raise MaterialBroken("MATERIAL_UNEXPECTED", "a nested multipart")
        return part


async def _pieces_or_broken(part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        async for chunk in part_pieces(part):
            yield chunk
    except READ_ERRORS:
        raise MaterialBroken("MATERIAL_TRUNCATED", "the message broke off") from None
