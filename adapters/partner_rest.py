"""REST to a partner: POST the XGW-ENV/1 envelope as JSON, get the sealed reply as JSON.

One aiohttp session per partner with its own connection limit, so a slow partner cannot take
the connections another partner needs.
"""

from __future__ import annotations

import orjson

from adapters.delivery_errors import DeliveryError, refusal, unavailable
from adapters.http_post import post, session
from security import envelope as env


class RestPartnerClient:
    def __init__(self, max_connections: int) -> None:
        self._session = session(max_connections)

    async def close(self) -> None:
        await self._session.close()

    async def send(self, url: str, envelope: env.Envelope, timeout: float) -> env.Envelope:
        reply = await post(
            self._session, url, envelope.to_json(), {"Content-Type": "application/json"}, timeout
        )
        status, body = reply.status, reply.body
        if status >= 500 or status == 429:
            raise unavailable(status)
        if status != 200:
            try:
                problem = orjson.loads(body)
                raise refusal(
                    str(problem.get("code", f"HTTP_{status}")), str(problem.get("title", ""))
                )
            except (orjson.JSONDecodeError, AttributeError):
                raise refusal(f"HTTP_{status}", "the partner refused the message") from None
        try:
            return env.envelope_from_json(body)
        except Exception:
            raise DeliveryError(
                "REPLY_MALFORMED", "the partner's reply is not an envelope", transient=True
            ) from None
