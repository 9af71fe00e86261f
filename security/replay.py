"""Replay guard: a created-time window plus a nonce cache.

The cache is an async ``NonceStore``: ``MemoryNonceStore`` (one process, TTL) by default;
``adapters.redis_nonces.RedisNonceStore`` (``SET NX EX``) when several instances share the work.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from security.errors import STALE, SecurityError


class NonceStore(Protocol):
    async def claim(self, key: str, ttl_seconds: int) -> bool:
        """True if ``key`` was not seen within its TTL (and is now recorded), else False."""
        ...


def check_fresh(created: datetime, now: datetime, window_seconds: float) -> None:
    skew = abs((now - created).total_seconds())
    if skew > window_seconds:
        raise SecurityError(
            STALE, f"created time is {skew:.0f}s from ours; the window is ±{window_seconds:.0f}s"
        )


def nonce_ttl(window_seconds: float) -> int:
    # A nonce must be remembered as long as its envelope could still pass the time check.
    return int(2 * window_seconds) + 5


class MemoryNonceStore:
    """In-process nonce cache with expiry; purges lazily so memory stays bounded by traffic."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}
        self._next_purge = 0.0

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        if now >= self._next_purge:
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
            self._next_purge = now + 10
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            return False
        self._expiry[key] = now + ttl_seconds
        return True
