"""SOAP 1.1 to a partner, with zeep for the envelope and aiohttp for the transport.

Why not zeep's AsyncTransport: it needs httpx, a second HTTP stack beside aiohttp; zeep builds
and parses the messages against the partner's WSDL (loaded once, at start-up, off the event loop,
with DTDs, entities and external references forbidden) and aiohttp carries them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree
from zeep import Client, Settings
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault

from adapters.delivery_errors import DeliveryError, refusal, unavailable
from adapters.http_post import post, session
from security import envelope as env

PACKAGED_WSDL = Path(__file__).parent / "wsdl" / "partner-v1.wsdl"
PARTNER_NS = "urn:xgw:partner:1"
_FAULT_CODE = f"{{{PARTNER_NS}}}ErrorDetail/{{{PARTNER_NS}}}code"
SECURE = Settings(
    forbid_dtd=True, forbid_entities=True, forbid_external=True, strict=True, xml_huge_tree=False
)


@dataclass
class _Reply:
    """The slice of a requests.Response that zeep's reply processing reads."""

    status_code: int
    content: bytes
    headers: dict[str, str]
    encoding: str | None = "utf-8"


def load_client(wsdl: Path = PACKAGED_WSDL) -> Client:
    """Synchronous (parses the WSDL): call it at start-up, in a thread."""
    return Client(str(wsdl), settings=SECURE)  # type: ignore[no-untyped-call]


class SoapPartnerClient:
    def __init__(self, client: Client, max_connections: int) -> None:
        self._client = client
        self._binding = client.service._binding
        self._operation = self._binding.get("Submit")
        self._session = session(max_connections)

    async def close(self) -> None:
        await self._session.close()

    def build(self, envelope: env.Envelope) -> bytes:
        message = self._client.create_message(  # type: ignore[no-untyped-call]
            self._client.service, "Submit", Envelope=envelope.as_dict()
        )
        return bytes(etree.tostring(message, xml_declaration=True, encoding="UTF-8"))

    def parse(self, status: int, body: bytes, content_type: str) -> env.Envelope:
        try:
            result: Any = self._binding.process_reply(
                self._client, self._operation, _Reply(status, body, {"Content-Type": content_type})
            )
        except Fault as fault:
            # The WSDL's fault detail: <detail><ErrorDetail><code>…</code>… in its namespace.
            detail = fault.detail
            code = detail.findtext(_FAULT_CODE) if detail is not None else None
            raise refusal(code or "SOAP_FAULT", fault.message or "SOAP fault") from None
        except ZeepError:
            raise DeliveryError(
                "REPLY_MALFORMED", "the partner's SOAP reply is not valid", transient=True
            ) from None
        # zeep unwraps a single-part response: the result is the Envelope itself.
        envelope = getattr(result, "Envelope", result) if result is not None else None
        if envelope is None:
            raise DeliveryError(
                "REPLY_MALFORMED", "the SOAP reply carries no envelope", transient=True
            )
        try:
            return env.envelope_from_mapping({k: envelope[k] for k in env.FIELD_NAMES})
        except Exception:
            raise DeliveryError(
                "REPLY_MALFORMED", "the SOAP reply's envelope is malformed", transient=True
            ) from None

    async def send(self, url: str, envelope: env.Envelope, timeout: float) -> env.Envelope:
        body = self.build(envelope)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{self._operation.soapaction}"',
        }
        answer = await post(self._session, url, body, headers, timeout)
        status, reply, content_type = answer.status, answer.body, answer.content_type or "text/xml"
        if status >= 500 and b"Fault" not in reply:
            raise unavailable(status)
        return self.parse(status, reply, content_type)
