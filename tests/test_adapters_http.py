"""The one HTTP POST every outside call makes, against a real aiohttp server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from adapters.delivery_errors import DeliveryError
from adapters.http_post import post, session
from adapters.partner_soap import SoapPartnerClient, load_messages
from tests.conftest import free_port
from tests.security_helpers import TO_XZ_PARTY, Pair

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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


@contextlib.asynccontextmanager
async def _serving(path: str, handler: Handler) -> AsyncIterator[str]:
    """A real aiohttp server on a loopback port answering POST ``path``: its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def peer() -> AsyncIterator[str]:
    async with _serving("/", _in_pieces) as url:
        yield url


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


FAULT = """<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Body>
    <soap:Fault>
      <faultcode>soap:Server</faultcode>
      <faultstring>refused</faultstring>
      <detail>%s</detail>
    </soap:Fault>
  </soap:Body>
</soap:Envelope>"""
ERROR_DETAIL = '<d:ErrorDetail xmlns:d="urn:xgw:partner:1"><d:code>%s</d:code></d:ErrorDetail>'


@pytest.fixture
async def faulting_partner() -> AsyncIterator[str]:
    """A SOAP partner that answers every call with the Fault named in the query, its detail
    shaped as the partner WSDL declares it (tns:ErrorDetail with a code)."""

    async def fault(request: web.Request) -> web.Response:
        if "status" in request.query:  # an HTTP refusal without a SOAP body
            return web.Response(status=int(request.query["status"]))
        code = request.query.get("code")
        detail = ERROR_DETAIL % code if code else ""
        return web.Response(status=500, text=FAULT % detail, content_type="text/xml")

    async with _serving("/soap", fault) as url:
        yield url


async def test_a_partners_soap_fault_keeps_its_code(faulting_partner: str) -> None:
    """The fault's code decides what happens next: a replay or a rate limit is retried (a
    replay re-sealed), a refusal is final; a fault without a code is a SOAP_FAULT retried like
    any other 5xx (envelope spec §7)."""
    client = SoapPartnerClient(await asyncio.to_thread(load_messages), 2)
    envelope = Pair().xy_sealer.seal(
        b"{}", receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k"
    )
    try:
        for code, transient in (
            ("REPLAYED", True),
            ("RATE_LIMITED", True),
            ("MATTER_NOT_ALLOWED", False),
            (None, True),
        ):
            url = faulting_partner + (f"?code={code}" if code else "")
            with pytest.raises(DeliveryError) as refused:
                await client.send(url, envelope, 5.0)
            assert refused.value.code == (code or "SOAP_FAULT")
            assert refused.value.transient is transient
        # 429 and 503 without a Fault: not taken in, try again later (as over REST)
        for status in (429, 503):
            with pytest.raises(DeliveryError) as refused:
                await client.send(f"{faulting_partner}?status={status}", envelope, 5.0)
            assert (refused.value.code, refused.value.transient, refused.value.reached) == (
                "PARTNER_UNAVAILABLE",
                True,
                False,
            )
    finally:
        await client.close()


async def test_a_failure_says_whether_the_request_may_have_reached_the_peer(peer: str) -> None:
    """No connection: it cannot have (a case may still be cancelled); a timeout after the
    request went out: it may have (the peer may have acted)."""
    client = session(2)
    try:
        with pytest.raises(DeliveryError) as refused:
            await post(client, f"http://127.0.0.1:{free_port()}/", b"ask", {}, 5.0)
        assert (refused.value.code, refused.value.reached) == ("CONNECTION_FAILED", False)
        with pytest.raises(DeliveryError) as timed_out:
            await post(client, f"{peer}?pieces=200", b"ask", {}, 0.05)  # ~0.4 s to answer
        assert (timed_out.value.code, timed_out.value.reached) == ("TIMEOUT", True)
    finally:
        await client.close()
