"""The one HTTP POST every outside call makes: bounded reply size, timeouts and connection
failures turned into transient DeliveryErrors."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from adapters.delivery_errors import DeliveryError

MAX_REPLY_BYTES = 16 * 1024 * 1024


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


async def post(
    client: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout: float
) -> HttpReply:
    try:
        async with client.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            return HttpReply(
                response.status,
                await response.content.read(MAX_REPLY_BYTES),
                response.headers.get("Content-Type", ""),
            )
    except TimeoutError:
        raise DeliveryError("TIMEOUT", f"no answer within {timeout:g}s", transient=True) from None
    except aiohttp.ClientError as exc:
        raise DeliveryError("CONNECTION_FAILED", type(exc).__name__, transient=True) from None
