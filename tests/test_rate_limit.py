"""Per-key minute counts without Redis (one instance): fixed one-minute windows per key."""

from __future__ import annotations

from adapters.rate_limit import RateLimiter


async def test_each_key_gets_its_own_count_for_each_minute() -> None:
    now = [600.0]  # 10:00 on the limiter's clock
    limiter = RateLimiter(None, clock=lambda: now[0])
    assert [await limiter.allow("411329", 3) for _ in range(4)] == [True, True, True, False]
    assert await limiter.allow("420300", 1)  # another partner's count is its own
    assert not await limiter.allow("420300", 1)
    now[0] = 659.9  # still the same minute
    assert not await limiter.allow("411329", 3)
    assert await limiter.count("411329") == 5  # refused ones count too
    now[0] = 660.0  # the next minute: counts start again, and the old ones are dropped
    assert await limiter.allow("411329", 3)
    assert set(limiter.counts) == {("411329", 11)}
