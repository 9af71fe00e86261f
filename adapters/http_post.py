"""The one HTTP POST every outside call makes: bounded reply size, timeouts and connection
failures turned into transient DeliveryErrors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.delivery_errors import DeliveryError

MAX_REPLY_BYTES = 16 * 1024 * 1024
# An XGW-ENV/2 message's materials as a partner client sends them: a sealed stream by its code,
# read from the outbox as it is sent.
MaterialSource = Callable[[str], AsyncIterator[bytes]]


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str


def session(max_connections: int) -> aiohttp.ClientSession:
    """One pool per peer, so a slow peer cannot take the connections another one needs."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        headers={"User-Agent": "xgw"},
    )


def _too_large(limit: int) -> DeliveryError:
    # Transient: the message id is the peer's idempotency key, so sending again is safe; a peer
    # that keeps answering this way ends as a dead letter, with this code, for a person to see.
    return DeliveryError("REPLY_TOO_LARGE", f"the reply is over {limit} bytes", transient=True)


async def read_bounded(response: aiohttp.ClientResponse, limit: int = MAX_REPLY_BYTES) -> bytes:
    """The whole body, however many pieces it arrives in, or REPLY_TOO_LARGE as soon as it
    passes ``limit`` (never more than that held). A single ``read(n)`` is not enough: it
    returns what has arrived so far, and a large reply would be cut short."""
    if response.content_length is not None and response.content_length > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes | Any,  # bytes, or an aiohttp payload (a multipart writer) sent as it is made
    headers: dict[str, str],
    timeout: float,
    limit: int = MAX_REPLY_BYTES,
) -> HttpReply:
    try:
        async with client.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return HttpReply(
                response.status,
                await read_bounded(response, limit),
                response.headers.get("Content-Type", ""),
            )
    except TimeoutError:
        raise DeliveryError("TIMEOUT", f"no answer within {timeout:g}s", transient=True) from None
    except aiohttp.ClientConnectorError as exc:  # no connection: nothing was sent
        raise DeliveryError(
            "CONNECTION_FAILED", type(exc).__name__, transient=True, reached=False
        ) from None
    except aiohttp.ClientError as exc:  # dropped mid-exchange: it may have been taken in
        raise DeliveryError("CONNECTION_FAILED", type(exc).__name__, transient=True) from None
