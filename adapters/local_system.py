"""Our own back office (the 襄州 department systems that decide a matter), over REST.

POST {base}/{domain}/matters with {"case_id", "matter", "form"}; the answer says whether the
office accepted and decided it: {"status": "done" | "rejected", "result": {...}, "message": …}.
"""

from __future__ import annotations

from typing import Any

import orjson

from adapters.delivery_errors import DeliveryError
from adapters.http_post import post, session


class LocalSystemClient:
    def __init__(self, max_connections: int = 16) -> None:
        self._session = session(max_connections)

    async def close(self) -> None:
        await self._session.close()

    async def submit(self, base: str, domain: str, body: bytes, timeout: float) -> dict[str, Any]:
        reply = await post(
            self._session,
            f"{base.rstrip('/')}/{domain}/matters",
            body,
            {"Content-Type": "application/json"},
            timeout,
        )
        status, payload = reply.status, reply.body
        if status >= 500 or status == 429:
            raise DeliveryError("LOCAL_UNAVAILABLE", f"HTTP {status}", True)
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise DeliveryError(
                "LOCAL_REPLY_MALFORMED", "the back office's answer is not JSON", True
            ) from None
        if (
            status != 200
            or not isinstance(answer, dict)
            or answer.get("status") not in ("done", "rejected")
        ):
            raise DeliveryError(
                "LOCAL_REFUSED", f"the back office refused the case (HTTP {status})", False
            )
        return answer
