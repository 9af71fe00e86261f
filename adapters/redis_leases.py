"""Message leases in Redis, shared by every gateway instance: one sender of a message at a time.

A lease is ``SET key owner NX PX ttl``; renewing and releasing are Lua scripts so that an
instance only ever renews or drops its own lease (compare and act in one step).
"""

from __future__ import annotations

import contextlib

import redis.asyncio as aioredis

_RENEW = (
    "local held = redis.call('get', KEYS[1]) "
    "if held == false or held == ARGV[1] then "
    "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0"
)
_TAKE = (
    "local held = redis.call('get', KEYS[1]) "
    "if held == false or held == ARGV[3] then "
    "redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class RedisLeases:
    def __init__(self, client: aioredis.Redis, owner: str, prefix: str = "xgw:lease:") -> None:
        self._client, self._owner, self._prefix = client, owner, prefix

    async def take(self, msg_id: str, seconds: float, from_dead: str | None = None) -> bool:
        """The lease, if nobody holds it — or if ``from_dead`` does, an owner the store found
        dead (it stopped beating): its lease would otherwise hold the message for the rest of
        its time. Raises the client's errors (Redis away)."""
        key = self._prefix + msg_id
        if from_dead is None:
            return bool(
                await self._client.set(key, self._owner.encode(), nx=True, px=int(seconds * 1000))
            )
        taken = await self._client.eval(
            _TAKE, 1, key, self._owner, str(int(seconds * 1000)), from_dead
        )
        return bool(taken)

    async def renew(self, msg_id: str, seconds: float) -> bool:
        """Extend our lease (or take it, if it ran out and nobody took it); False if another
        instance holds it."""
        renewed = await self._client.eval(
            _RENEW, 1, self._prefix + msg_id, self._owner, str(int(seconds * 1000))
        )
        return bool(renewed)

    async def release(self, msg_id: str) -> None:
        """Drop our lease, if it is still ours; a Redis error leaves it to expire."""
        with contextlib.suppress(Exception):
            await self._client.eval(_RELEASE, 1, self._prefix + msg_id, self._owner)
