"""The partner-facing shells: SOAP 1.1 at ``/soap/v1`` (static WSDL at ``/soap/v1?wsdl``) and
REST at ``/partner/v1/…``. Both parse, then call the one ``InboundService`` core; every refusal is
a SOAP Fault or problem+json with its stable code, and an audit entry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, create_model

from adapters import soap11
from gateway import __version__
from gateway.core.problems import GatewayError
from gateway.http.clients import MUTUAL_TLS, client_address, client_certificate
from gateway.http.multipart import MaterialParts
from gateway.http.problem import problem_response
from gateway.http.windows import (
    BODY_REFUSALS,
    MATERIAL_LIMITS,
    MAX_BODY_BYTES,
    read_body,
)
from gateway.partners import PartnerConfigError
from gateway.services.inbound import InboundRefused, InboundService
from gateway.services.records import Recorder
from gateway.storage import ExchangeRecord
from security import envelope as env
from security.errors import SecurityError
from security.stream import MaterialBroken

GATEWAY_NS = "urn:xgw:gateway:1"
WSDL = Path(__file__).resolve().parent / "wsdl" / "xgw-v1.wsdl"
OPERATIONS = {
    "SubmitCase": "submit",
    "ReportResult": "report",
    "QueryStatus": "status",
    "WitnessCheckpoint": "witness",
}
REST_PATHS = {"cases": "submit", "results": "report", "status": "status", "witness": "witness"}
Operation = Callable[[env.Envelope], Awaitable[env.Envelope]]


def _problem(code: str, message: str, status: int, request: web.Request) -> web.Response:
    return problem_response(GatewayError(code, status, message), request)


def forwarded_scheme(request: web.Request) -> str | None:
    """The scheme the client used, as a front proxy terminating TLS states it (``Forwarded:
    proto=https`` or ``X-Forwarded-Proto``): so the WSDL advertises the address clients reach."""
    forwarded = request.headers.get("Forwarded", "")
    for part in forwarded.split(",")[0].split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "proto" and value.strip('"').lower() in ("http", "https"):
            return value.strip('"').lower()
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return proto if proto in ("http", "https") else None


def _soap(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A SOAP 1.1 answer: text/xml with its charset, as SOAP 1.1 stacks expect it."""
    return web.Response(
        body=body, status=status, content_type="text/xml", charset="utf-8", headers=headers
    )


THROTTLED = InboundRefused("RATE_LIMITED", "too many refused messages from this address")


class PartnerApi:
    def __init__(
        self, service: InboundService, recorder: Recorder | None = None, node: str = ""
    ) -> None:
        """``recorder``: an operational record of each message a partner sends (``node``:
        this node's id, in it)."""
        self.service, self.recorder, self.node = service, recorder, node
        self._wsdl = WSDL.read_text(encoding="utf-8")

    def _record(
        self,
        began: float,
        protocol: str,
        operation: str,
        envelope: env.Envelope | None,
        raw: bytes | None,
        response: web.Response,
        outcome: str,
    ) -> web.Response:
        if self.recorder is not None:
            body = response.body
            self.recorder.add(
                ExchangeRecord(
                    node=self.node,
                    direction="inbound",
                    partner=envelope.sender_region if envelope is not None else None,
                    protocol=protocol,
                    operation=operation,
                    matter=envelope.matter if envelope is not None else None,
                    message_id=envelope.msg_id if envelope is not None else None,
                    time=began,
                    request_at=began,
                    response_at=time.time(),
                    request_bytes=len(raw) if raw is not None else None,
                    response_bytes=len(body) if isinstance(body, bytes) else None,
                    outcome=outcome,
                )
            )
        return response

    def _check_certificate(self, request: web.Request, envelope: env.Envelope) -> None:
        """With mutual TLS, the client certificate must be one partners.yaml lists for the
        region the envelope claims: a partner's certificate cannot carry another's message."""
        if not request.app.get(MUTUAL_TLS, False):
            return
        fingerprint = client_certificate(request)
        if fingerprint is None:
            raise InboundRefused(
                "CLIENT_CERT_REQUIRED", "a partner's client certificate is required"
            )
        try:
            listed = self.service.partners.get(envelope.sender_region).client_certificates
        except PartnerConfigError:
            listed = []
        if fingerprint not in listed:
            raise InboundRefused(
                "CLIENT_CERT_WRONG_JURISDICTION",
                f"this client certificate is not one of {envelope.sender_region}'s",
            )

    async def _run(self, name: str, envelope: env.Envelope) -> env.Envelope:
        operation: Operation = getattr(self.service, name)
        return await operation(envelope)

    # -- SOAP ---------------------------------------------------------------------------------

    async def soap_get(self, request: web.Request) -> web.Response:
        if not any(name.lower() == "wsdl" for name in request.query):  # ?wsdl, ?WSDL (Java)
            return web.Response(
                status=405, text="POST SOAP 1.1 requests here; GET ?wsdl for the WSDL"
            )
        url = request.url.with_query(None)
        scheme = forwarded_scheme(request)
        location = str(url.with_scheme(scheme) if scheme else url)
        return web.Response(
            text=self._wsdl.replace("http://127.0.0.1:8080/soap/v1", location),
            content_type="text/xml",
            charset="utf-8",
        )

    async def soap_post(self, request: web.Request) -> web.Response:
        if soap11.media_type(request.headers.get("Content-Type", "")) == "multipart/related":
            seconds = request.app[MATERIAL_LIMITS].seconds
            try:
                async with asyncio.timeout(seconds):
                    return await self._soap_post(request)
            except TimeoutError:
                fault = soap11.fault_for("BODY_TIMEOUT", f"not within {seconds:g} s", GATEWAY_NS)
                return _soap(fault, 500)
        return await self._soap_post(request)

    async def _soap_post(self, request: web.Request) -> web.Response:
        envelope: env.Envelope | None = None
        operation = "unknown"
        raw: bytes | None = None
        began = time.time()
        if await self.service.source_throttled(client_address(request)):
            fault = soap11.fault_for(THROTTLED.code, THROTTLED.message, GATEWAY_NS)
            throttled = _soap(fault, 429, {"Retry-After": "60"})
            return self._record(began, "soap", operation, None, None, throttled, THROTTLED.code)
        try:
            content_type = request.headers.get("Content-Type", "")
            parts: MaterialParts | None = None
            try:
                if soap11.media_type(content_type) == "multipart/related":  # MTOM/XOP
                    parts = MaterialParts(await request.multipart(), xop=True)
                    raw, content_type = await parts.first(request.app[MAX_BODY_BYTES]), "text/xml"
                else:
                    raw = await read_body(request)
            except GatewayError as exc:
                raise soap11.SoapError(exc.code, exc.detail or exc.title) from None
            except MaterialBroken as exc:
                raise soap11.SoapError(exc.code, exc.message) from None
            operation, element = soap11.parse_request(
                raw,
                content_type,
                request.headers.get("SOAPAction"),
                {op: f"{{{GATEWAY_NS}}}{op}Request" for op in OPERATIONS},
            )
            if operation == "SubmitCase":
                envelope, included = soap11.carried_with_materials(
                    element, f"{{{GATEWAY_NS}}}Material"
                )
                if parts is not None:
                    parts.name_by_content_id(included)
            else:
                envelope = soap11.carried_envelope(element)
            self._check_certificate(request, envelope)
            if operation == "SubmitCase":
                reply = await self.service.submit(envelope, parts)
            else:
                reply = await self._run(OPERATIONS[operation], envelope)
        except soap11.SoapError as exc:
            await self.service.refused(
                InboundRefused(exc.code, exc.message),
                envelope,
                operation,
                raw,
                client_address(request),
            )
            refused = _soap(soap11.fault_xml(exc, GATEWAY_NS), exc.status)
            return self._record(began, "soap", operation, envelope, raw, refused, exc.code)
        except (SecurityError, InboundRefused) as exc:
            await self.service.refused(exc, envelope, operation, raw, client_address(request))
            refused = _soap(soap11.fault_for(exc.code, exc.message, GATEWAY_NS), 500)
            return self._record(began, "soap", operation, envelope, raw, refused, exc.code)
        body = soap11.envelope_response(f"{{{GATEWAY_NS}}}{operation}Response", reply)
        return self._record(began, "soap", operation, envelope, raw, _soap(body), "accepted")

    # -- REST ---------------------------------------------------------------------------------

    async def rest_post(self, request: web.Request) -> web.Response:
        if request.content_type == "multipart/form-data":
            seconds = request.app[MATERIAL_LIMITS].seconds
            try:
                async with asyncio.timeout(seconds):
                    return await self._rest_post(request)
            except TimeoutError:
                return _problem(
                    "BODY_TIMEOUT", f"the message did not arrive within {seconds:g} s", 408, request
                )
        return await self._rest_post(request)

    async def _rest_post(self, request: web.Request) -> web.Response:
        name = REST_PATHS[request.match_info["operation"]]
        envelope: env.Envelope | None = None
        raw: bytes | None = None
        began = time.time()
        if await self.service.source_throttled(client_address(request)):
            throttled = _problem(THROTTLED.code, THROTTLED.message, 429, request)
            return self._record(began, "rest", name, None, None, throttled, THROTTLED.code)
        parts: MaterialParts | None = None
        try:
            try:
                if request.content_type == "multipart/form-data":  # XGW-ENV/2 with materials
                    parts = MaterialParts(await request.multipart())
                    raw = await parts.first(request.app[MAX_BODY_BYTES], "envelope")
                else:
                    raw = await read_body(request)
            except GatewayError as exc:
                raise InboundRefused(exc.code, exc.detail or exc.title, status=exc.status) from None
            except MaterialBroken as exc:
                raise InboundRefused(exc.code, exc.message) from None
            envelope = env.envelope_from_json(raw)
            self._check_certificate(request, envelope)
            if name == "submit":
                reply = await self.service.submit(envelope, parts)
            else:
                reply = await self._run(name, envelope)
        except InboundRefused as exc:
            await self.service.refused(exc, envelope, name, raw, client_address(request))
            refused = _problem(exc.code, exc.message, exc.status, request)
            return self._record(began, "rest", name, envelope, raw, refused, exc.code)
        except SecurityError as exc:
            await self.service.refused(exc, envelope, name, raw, client_address(request))
            status = InboundRefused(exc.code, "").status
            refused = _problem(exc.code, exc.message, status, request)
            return self._record(began, "rest", name, envelope, raw, refused, exc.code)
        answer = web.Response(body=reply.to_json(), content_type="application/json")
        return self._record(began, "rest", name, envelope, raw, answer, "accepted")

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(partner_openapi()), content_type="application/json")


def _envelope_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (str, Field(pattern=pattern)) for name, pattern in env.PATTERNS.items()
    }
    return create_model("Envelope", **fields)


def partner_openapi() -> dict[str, Any]:
    envelope = _envelope_model().model_json_schema()
    sealed = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}
    }
    problem = {
        "application/problem+json": {
            "schema": {
                "type": "object",
                "required": ["code", "status", "title"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "instance": {"type": "string"},
                },
            }
        }
    }
    errors = {
        str(s): {"description": d, "content": problem}
        for s, d in (
            (400, "malformed envelope or payload"),
            (401, "signature, key or freshness refused"),
            (403, "not authorized for this matter, message or case"),
            (409, "replayed nonce"),
            (429, "rate limited"),
            *BODY_REFUSALS,
        )
    }

    def operation(summary: str, kind: str) -> dict[str, Any]:
        return {
            "summary": summary,
            "description": f"request envelope kind: {kind}; answer: a sealed receipt",
            "requestBody": {"required": True, **sealed},
            "responses": {"200": {"description": "sealed receipt", **sealed}, **errors},
        }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "xgw partner API (跨省通办, XGW-ENV/1)",
            "version": __version__,
            "description": "Every body is an XGW-ENV/1 sealed envelope (docs/envelope.md). The SOAP "
            "service at /soap/v1?wsdl offers the same operations.",
        },
        "components": {"schemas": {"Envelope": envelope}},
        "paths": {
            "/partner/v1/cases": {
                "post": operation("File a case with 襄州 (SubmitCase)", "request")
            },
            "/partner/v1/results": {
                "post": operation(
                    "Report the result of one of our messages (ReportResult)", "result"
                )
            },
            "/partner/v1/status": {
                "post": operation("Ask the status of a case you filed (QueryStatus)", "query")
            },
            "/partner/v1/witness": {
                "post": operation(
                    "Ask us to countersign a checkpoint of your exchange log (WitnessCheckpoint)",
                    "witness",
                )
            },
        },
    }
