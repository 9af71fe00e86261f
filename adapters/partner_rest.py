"""REST to a partner: POST the envelope as JSON, get the sealed reply as JSON.

An XGW-ENV/2 envelope with materials goes as ``multipart/form-data``: the part ``envelope``
(the JSON) first, so the partner verifies the signature and reads the manifest before any
material arrives; then one part per material, named by its code, in the manifest's order, each
the material's sealed stream (``application/octet-stream``), streamed from the outbox.

One aiohttp session per partner with its own connection limit, so a slow partner cannot take
the connections another partner needs.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp.payload import AsyncIterablePayload

from adapters.delivery_errors import DeliveryError, refusal, unavailable
from adapters.http_post import MaterialSource, post, session
from security import envelope as env


def multipart_body(envelope: env.Envelope, materials: MaterialSource) -> aiohttp.MultipartWriter:
    """The envelope first, then each material's sealed stream in the manifest's order."""
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(envelope.to_json(), {"Content-Type": "application/json"})
    part.set_content_disposition("form-data", name="envelope")
    for entry in envelope.manifest:
        part = writer.append_payload(
            AsyncIterablePayload(materials(entry.code), content_type="application/octet-stream")
        )
        part.set_content_disposition("form-data", name=entry.code, filename=entry.code)
    return writer


class RestPartnerClient:
    def __init__(self, max_connections: int) -> None:
        self._session = session(max_connections)

    async def close(self) -> None:
        await self._session.close()

    async def send(
        self,
        url: str,
        envelope: env.Envelope,
        timeout: float,
        materials: MaterialSource | None = None,
    ) -> env.Envelope:
        body: Any
        if envelope.materials:
            if materials is None:
                raise ValueError("an envelope with materials needs their source")
            body, headers = multipart_body(envelope, materials), {}
        else:
            body, headers = envelope.to_json(), {"Content-Type": "application/json"}
        reply = await post(self._session, url, body, headers, timeout)
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
