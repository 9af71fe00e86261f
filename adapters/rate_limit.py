"""Counting per key and clock minute (a partner's messages, a source's refusals): in Redis
when configured, so that every gateway instance counts together; in memory otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis


@dataclass
class RateLimiter:
    """Fixed one-minute windows per key (a partner's region, a source address); in Redis
    (shared by instances) when configured."""

    redis: aioredis.Redis | None
    counts: dict[tuple[str, int], int] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    async def allow(self, key: str, per_minute: int) -> bool:
        """Count one more for ``key``; whether it is still within ``per_minute``."""
        return await self.add(key) <= per_minute

    async def add(self, key: str) -> int:
        """Count one more for ``key`` this minute; the count so far."""
        window = int(self.clock() // 60)
        if self.redis is not None:
            name = f"xgw:rate:{key}:{window}"
            count = int(await self.redis.incr(name))
            if count == 1:
                await self.redis.expire(name, 120)
            return count
        if any(k[1] < window for k in self.counts):  # a new minute: the old ones go
            self.counts = {k: v for k, v in self.counts.items() if k[1] == window}
        count = self.counts.get((key, window), 0) + 1
        self.counts[(key, window)] = count
        return count

    async def count(self, key: str) -> int:
        """How many were counted for ``key`` this minute."""
        window = int(self.clock() // 60)
        if self.redis is not None:
            return int(await self.redis.get(f"xgw:rate:{key}:{window}") or 0)
        return self.counts.get((key, window), 0)
