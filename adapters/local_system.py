"""Our own back office (the 襄州 department systems that decide a matter), over REST.

POST {base}/{domain}/matters with {"case_id", "matter", "form"}; the answer says whether the
office accepted and decided it: {"status": "done" | "rejected", "result": {...}, "message": …}.
A case a partner filed with materials goes as ``multipart/form-data``: the part ``case`` (that
JSON, whose ``materials`` lists each one's code, type, size and SM3) first, then one part per
material, named by its code, its plaintext (inside our network, from our store).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp.payload import AsyncIterablePayload

from adapters.delivery_errors import DeliveryError
from adapters.http_post import post, session


class LocalSystemClient:
    def __init__(self, max_connections: int = 16) -> None:
        self._session = session(max_connections)

    async def close(self) -> None:
        await self._session.close()

    async def submit(
        self,
        base: str,
        domain: str,
        body: bytes,
        timeout: float,
        materials: list[tuple[str, Callable[[], AsyncIterator[bytes]]]] | None = None,
    ) -> dict[str, Any]:
        """``materials``: (code, its bytes) of each material the case carries, in order."""
        data: Any = body
        headers = {"Content-Type": "application/json"}
        if materials:
            data, headers = aiohttp.MultipartWriter("form-data"), {}
            part = data.append(body, {"Content-Type": "application/json"})
            part.set_content_disposition("form-data", name="case")
            for code, stream in materials:
                part = data.append_payload(
                    AsyncIterablePayload(stream(), content_type="application/octet-stream")
                )
                part.set_content_disposition("form-data", name=code, filename=code)
        reply = await post(
            self._session, f"{base.rstrip('/')}/{domain}/matters", data, headers, timeout
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
