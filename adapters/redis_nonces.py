"""The replay guard's nonce cache in Redis, shared by every gateway instance."""

from __future__ import annotations

import redis.asyncio as aioredis


class RedisNonceStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "xgw:nonce:") -> None:
        self._client = client
        self._prefix = prefix

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        # SET NX EX is atomic: of two instances racing on one nonce, exactly one wins.
        return bool(await self._client.set(self._prefix + key, b"1", nx=True, ex=ttl_seconds))
