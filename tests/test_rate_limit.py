"""A partner's rate limit without Redis (one instance): fixed one-minute windows per partner."""

from __future__ import annotations

from gateway.partners import Partner
from gateway.services.inbound import RateLimiter


def _partner(region: str, per_minute: int) -> Partner:
    return Partner.model_validate(
        {
            "region": region,
            "name": f"SAMPLE {region}",
            "node": "gw",
            "endpoints": [{"protocol": "rest", "url": "http://127.0.0.1:9/"}],
            "rate_limit_per_minute": per_minute,
        }
    )


async def test_each_partner_gets_its_own_count_for_each_minute() -> None:
    now = [600.0]  # 10:00 on the limiter's clock
    limiter = RateLimiter(None, {}, clock=lambda: now[0])
    xinye, shiyan = _partner("411329", 3), _partner("420300", 1)
    assert [await limiter.allow(xinye) for _ in range(4)] == [True, True, True, False]
    assert await limiter.allow(shiyan)  # another partner's count is its own
    assert not await limiter.allow(shiyan)
    now[0] = 659.9  # still the same minute
    assert not await limiter.allow(xinye)
    now[0] = 660.0  # the next minute: counts start again, and the old ones are dropped
    assert await limiter.allow(xinye)
    assert set(limiter.counts) == {("411329", 11)}
