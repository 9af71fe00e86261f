"""The one HTTP POST every outside call makes, against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from adapters.delivery_errors import DeliveryError
from adapters.http_post import post, session
from tests.conftest import free_port

PIECE = b"0123456789" * 1000  # 10,000 bytes


async def _in_pieces(request: web.Request) -> web.StreamResponse:
    """A reply written in pieces with pauses, as a partner's large answer arrives."""
    pieces = int(request.query.get("pieces", "30"))
    response = web.StreamResponse()
    if request.query.get("length") != "unknown":
        response.content_length = pieces * len(PIECE)
    await response.prepare(request)
    for _ in range(pieces):
        await response.write(PIECE)
        await asyncio.sleep(0.002)
    await response.write_eof()
    return response


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/", _in_pieces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_reply_arriving_in_pieces_is_read_whole(peer: str) -> None:
    client = session(2)
    try:
        for length in ("known", "unknown"):  # Content-Length, or chunked
            reply = await post(client, f"{peer}?length={length}", b"ask", {}, 5.0)
            assert reply.status == 200
            assert reply.body == PIECE * 30
    finally:
        await client.close()


async def test_a_reply_over_the_limit_is_refused_not_cut(peer: str) -> None:
    client = session(2)
    try:
        for length in ("known", "unknown"):
            with pytest.raises(DeliveryError) as caught:
                await post(client, f"{peer}?length={length}", b"ask", {}, 5.0, limit=100_000)
            assert caught.value.code == "REPLY_TOO_LARGE"
            assert caught.value.transient  # the message id makes sending again safe
        # exactly at the limit is still a reply
        reply = await post(client, f"{peer}?pieces=10", b"ask", {}, 5.0, limit=100_000)
        assert len(reply.body) == 100_000
    finally:
        await client.close()
