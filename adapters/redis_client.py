"""Redis connection for shared state (nonces, leases, rate limits) with explicit timeouts.

redis-py retries by default, which may resend a non-idempotent write; our writes are
``SET NX``/Lua claims that are safe to reject but not to double, so retries are off and
callers decide.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect(url: str, socket_timeout: float | None = 5.0) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


async def ping(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
