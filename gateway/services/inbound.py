"""Partners crossing the border into 襄州: one core behind the SOAP and the REST shells.

    parse → verify seal (signature, key validity, freshness) → de-duplicate by message id
          → replay guard → decrypt → authorize → map partner codes and schema to ours
          → hand to our back office (through the outbox) → answer with a sealed receipt

Operations: ``submit`` (a partner files one of our matters), ``report`` (a partner reports the
result of one of our messages), ``status`` (a partner asks about a case it filed). A partner only
ever sees or touches what it sent or what was sent to it. Every acceptance and refusal is audited.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters.rate_limit import RateLimiter
from gateway.audit.log import AuditEvent, AuditWriter
from gateway.core import answers
from gateway.core.cases import message_id
from gateway.core.lifecycle import HAND_OVER, INBOUND, RESULT, WITNESS, Inbound, InboundEvent
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.partners import Partner, PartnerConfigError, PartnerRegistry
from gateway.services.cases import (
    LICENCES_MEMBER,
    MAX_CASE_MATERIAL_BYTES,
    CaseService,
    Dispatcher,
    NoDispatcher,
    hand_over,
)
from gateway.services.materials import IncomingParts, take_sealed
from gateway.services.witness import WitnessService
from gateway.storage import InboundCase, MaterialRecord, OutboxMessage, Store, Transaction, iso_of
from mappings.mapping import MappingError
from mappings.registry import Registry
from mappings.transform import TransformError
from rules.materials import LICENCE_HOLDER, LICENCE_IDENTIFIER, MATERIAL_CODE
from rules.text import is_code
from security import envelope as env
from security.digest import sm3_hex
from security.errors import SecurityError
from security.sealing import Opener, Sealer
from security.stream import MaterialBroken

log = get_logger("gateway.services.inbound")
# HTTP status of each refusal (REST); SOAP answers every refusal as a Fault with the same code.
STATUS = {
    "CLIENT_CERT_REQUIRED": 403,
    "CLIENT_CERT_WRONG_JURISDICTION": 403,
    "ENVELOPE_MALFORMED": 400,
    "JSON_MALFORMED": 400,
    "NOT_FOR_US": 400,
    "DECRYPT_FAILED": 400,
    "PAYLOAD_MALFORMED": 400,
    "RESULT_MALFORMED": 400,
    "SIGNATURE_INVALID": 401,
    "KEY_UNKNOWN": 401,
    "KEY_REVOKED": 401,
    "KEY_EXPIRED": 401,
    "KEY_NOT_YET_VALID": 401,
    "KEY_WRONG_JURISDICTION": 401,
    "STALE": 401,
    "PARTNER_UNKNOWN": 403,
    "MATTER_NOT_AUTHORIZED": 403,
    "MESSAGE_NOT_YOURS": 403,
    "CASE_NOT_YOURS": 403,
    "REPLAYED": 409,
    "WRONG_OPERATION": 400,
    "RATE_LIMITED": 429,
    "MATERIAL_TOO_LARGE": 413,
}


MAX_LICENCES = 32  # 电子证照 one request may name


def _licences(value: Any, envelope: env.Envelope) -> list[dict[str, str]]:
    """The 电子证照 a partner's request names (XGW-ENV/2, §11), each of the expected shape."""
    if not isinstance(value, list) or len(value) > MAX_LICENCES:
        raise InboundRefused(
            "PAYLOAD_INVALID", f"{LICENCES_MEMBER}: a list of at most {MAX_LICENCES}", envelope
        )
    found = []
    for item in value:
        if not (
            isinstance(item, dict)
            and set(item) == {"material", "identifier", "holder"}
            and is_code(MATERIAL_CODE, item["material"])
            and is_code(LICENCE_IDENTIFIER, item["identifier"])
            and is_code(LICENCE_HOLDER, item["holder"])
        ):
            raise InboundRefused(
                "PAYLOAD_INVALID",
                f"{LICENCES_MEMBER}: each has material, identifier, holder",
                envelope,
            )
        found.append({k: str(item[k]) for k in ("material", "identifier", "holder")})
    return found


class InboundRefused(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        envelope: env.Envelope | None = None,
        status: int | None = None,  # where the refusal came with its own (reading the body)
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.envelope = code, message, envelope
        self._status = status
        # raised after the sender's signature verified (with the envelope it refuses)
        self.authenticated = envelope is not None

    @property
    def status(self) -> int:
        return self._status if self._status is not None else STATUS.get(self.code, 400)


def fingerprint(raw: bytes | None, envelope: env.Envelope | None) -> dict[str, Any]:
    """What the log keeps of a message refused before its signature verified: anyone can send
    one, so never the body — its size, its SM3, and what it claims (each value cut short)."""
    claimed = {}
    if envelope is not None:
        for name in ("msg_id", "kind", "sender_region", "sender_node", "sender_key_id", "matter"):
            claimed[name] = getattr(envelope, name)[:64]
    return {
        "size": len(raw) if raw is not None else None,
        "sm3": sm3_hex(raw) if raw is not None else None,
        "claimed": claimed,
    }


class InboundService:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        partners: PartnerRegistry,
        opener: Opener,
        sealer: Sealer,
        audit: AuditWriter,
        region: str,
        limiter: RateLimiter,
        cases: CaseService,
        witnesses: WitnessService,
        dispatcher: Dispatcher | None = None,
        refusals_per_minute: int = 60,
        metrics: Metrics | None = None,
        material_bytes: int = MAX_CASE_MATERIAL_BYTES,
    ) -> None:
        """``cases``: applies a result a partner reports to the sub-matter awaiting it;
        ``dispatcher``: sets messages going (the delivery worker)."""
        self.metrics = metrics or Metrics()
        self.store, self.registry, self.partners = store, registry, partners
        self.opener, self.sealer, self.audit, self.region = opener, sealer, audit, region
        self.limiter, self.refusals_per_minute = limiter, refusals_per_minute
        self.cases, self.witnesses = cases, witnesses
        self.dispatcher: Dispatcher = dispatcher or NoDispatcher()
        self.material_bytes = material_bytes  # one material a partner sends us, at most

    # -- the shared front half ---------------------------------------------------------------

    async def _open(
        self, envelope: env.Envelope, operation: str
    ) -> tuple[Partner, Any, env.Envelope | None]:
        """Authenticate, rate-limit, de-duplicate, open. Returns (partner, payload, cached reply)."""
        partner, payload, cached, _key = await self._open_with_key(envelope, operation)
        return partner, payload, cached

    async def _open_with_key(
        self, envelope: env.Envelope, operation: str
    ) -> tuple[Partner, Any, env.Envelope | None, bytes]:
        """As ``_open``, with the message's content key (it opens an XGW-ENV/2's materials)."""
        if envelope.materials and operation != "request":
            raise InboundRefused(
                "MATERIAL_UNEXPECTED", "only a case filed with us carries materials", envelope
            )
        now = datetime.now(UTC)
        sender = self.opener.authenticate(envelope, now)  # who, unchanged, fresh — first
        try:
            partner = self.partners.get(envelope.sender_region)
        except PartnerConfigError:
            raise InboundRefused(
                "PARTNER_UNKNOWN", f"{envelope.sender_region} is not a partner", envelope
            ) from None
        if envelope.kind != operation:
            raise InboundRefused(
                "WRONG_OPERATION", f"a {envelope.kind!r} envelope sent to {operation}", envelope
            )
        if not await self.limiter.allow(partner.region, partner.rate_limit_per_minute):
            raise InboundRefused("RATE_LIMITED", "too many messages this minute", envelope)
        cached = await self.store.inbound_reply(partner.region, envelope.msg_id)
        if cached is not None:  # a resend: the first answer again, re-sealed; no second effect
            return partner, None, self._seal(partner, envelope, cached), b""
        opened = await self.opener.unseal(envelope, sender)
        try:
            payload = orjson.loads(opened.plaintext)
        except orjson.JSONDecodeError:
            raise InboundRefused(
                "PAYLOAD_MALFORMED", "the sealed payload is not JSON", envelope
            ) from None
        return partner, payload, None, opened.content_key

    def _seal(self, partner: Partner, envelope: env.Envelope, body: dict[str, Any]) -> env.Envelope:
        return self.sealer.seal(
            orjson.dumps(body),
            receiver=env.Party(partner.region, partner.node),
            kind="receipt",
            matter=envelope.matter,
            idem_key=envelope.msg_id,
        )

    async def _answer(
        self,
        partner: Partner,
        envelope: env.Envelope,
        body: dict[str, Any],
        outcome: str,
        case_id: str | None = None,
        local_matter: str | None = None,
        code: str | None = None,
    ) -> env.Envelope:
        """The sealed answer, made while its log entry is being written; returned once both
        are done (no answer leaves that the exchange log does not hold)."""
        logged = asyncio.ensure_future(
            self._audit("message.received", outcome, envelope, case_id, local_matter, code)
        )
        try:
            return self._seal(partner, envelope, body)
        finally:
            await logged

    async def _remember(
        self, partner: Partner, envelope: env.Envelope, case_id: str | None, reply: dict[str, Any]
    ) -> None:
        async with self.store.transaction() as tx:
            await tx.remember_inbound(
                partner.region, envelope.msg_id, envelope.kind, case_id, reply
            )

    async def _audit(
        self,
        event: str,
        outcome: str,
        envelope: env.Envelope,
        case_id: str | None = None,
        local_matter: str | None = None,
        code: str | None = None,
    ) -> None:
        await self.audit.append(
            AuditEvent(
                event,
                "inbound",
                outcome,
                case_id=case_id,
                message_id=envelope.msg_id,
                partner=envelope.sender_region,
                local_matter=local_matter,
                partner_matter=envelope.matter,
                error_code=code,
                actor=envelope.sender_key_id,
                envelope=envelope.as_dict(),
            )
        )

    async def refused(
        self,
        error: InboundRefused | SecurityError,
        envelope: env.Envelope | None,
        operation: str,
        raw: bytes | None = None,
        source: str | None = None,
    ) -> None:
        """Audit a refusal. One refused by our rules after its signature verified keeps its
        envelope (signed evidence of what the partner sent); one refused by the security checks
        — anyone's, unauthenticated — keeps only its ``fingerprint`` and counts against its
        source address (``source_throttled``)."""
        authenticated = isinstance(error, InboundRefused) and error.authenticated
        self.metrics.refusals.labels(error.code).inc()
        details: dict[str, Any] = {"operation": operation}
        if not authenticated:
            details["fingerprint"] = fingerprint(raw, envelope)
            if source is not None:
                await self.limiter.add(f"refused:{source}")
        await self.audit.append(
            AuditEvent(
                "message.rejected",
                "inbound",
                "rejected",
                error_code=error.code,
                message_id=envelope.msg_id if envelope else None,
                partner=envelope.sender_region if envelope else None,
                partner_matter=envelope.matter if envelope else None,
                actor=envelope.sender_key_id if envelope else None,
                envelope=envelope.as_dict() if envelope and authenticated else None,
                details=details,
            )
        )

    async def source_throttled(self, source: str | None) -> bool:
        """Whether ``source`` sent more unauthenticated messages this minute than allowed: it
        is then answered 429 before its body is read (one log entry a minute says so)."""
        if source is None:
            return False
        refused = await self.limiter.count(f"refused:{source}")
        if refused < self.refusals_per_minute:
            return False
        if await self.limiter.add(f"throttled:{source}") == 1:
            log.warning("inbound.source_throttled", source=source, refused=refused)
            await self.audit.append(
                AuditEvent(
                    "source.throttled",
                    "inbound",
                    "rejected",
                    error_code="RATE_LIMITED",
                    details={"source": source, "refused_this_minute": refused},
                )
            )
        return True

    # -- operations -----------------------------------------------------------------------------

    async def submit(
        self, envelope: env.Envelope, parts: IncomingParts | None = None
    ) -> env.Envelope:
        """A case a partner files with us; ``parts``: the materials following an XGW-ENV/2
        envelope (a resend already answered is answered from its record, unread)."""
        partner, payload, cached, content_key = await self._open_with_key(envelope, "request")
        if cached is not None:
            return cached
        licences: list[dict[str, str]] = []
        if isinstance(payload, dict) and LICENCES_MEMBER in payload:
            licences = _licences(payload.pop(LICENCES_MEMBER), envelope)
        try:
            resolution = self.registry.resolve_inbound(
                self.region, partner.region, envelope.matter, payload, datetime.now(UTC).date()
            )
        except MappingError as exc:
            return await self._reject(partner, envelope, exc.code, exc.message)
        if (
            "*" not in partner.inbound_matters
            and resolution.local_code not in partner.inbound_matters
        ):
            raise InboundRefused(
                "MATTER_NOT_AUTHORIZED",
                f"{partner.region} may not file matter {resolution.local_code}",
                envelope,
            )
        try:
            form = self.registry.to_local(resolution, payload)
        except TransformError as exc:
            detail = "; ".join(f"{p.path}: {p.message}" for p in exc.problems[:10])
            return await self._reject(partner, envelope, "PAYLOAD_INVALID", detail)
        domain = self.registry.matter(self.region, resolution.local_code).domain
        taken: list[MaterialRecord] = []
        if envelope.manifest:
            try:
                taken = await take_sealed(
                    self.store,
                    self.opener.backend,
                    content_key,
                    envelope,
                    parts,
                    self.material_bytes,
                )
            except MaterialBroken as exc:
                raise InboundRefused(exc.code, exc.message, envelope) from None
            wrong = [
                m.code for m, e in zip(taken, envelope.manifest, strict=True) if m.kind != e.kind
            ]
            if wrong:
                await self.store.discard_materials([m.id for m in taken])
                return await self._reject(
                    partner,
                    envelope,
                    "MATERIAL_TYPE",
                    f"material {wrong[0]} is not the type its manifest says",
                )
        # Derived from the partner's own reference: a filing made again after a power cut lost
        # ours is the same case, and its hand-over the same message to the back office.
        case_id = f"IN-{partner.region}-{message_id(partner.region, envelope.idem_key)[:20]}"
        receipt = {"status": "accepted", "receipt_no": case_id, "matter": resolution.local_code}
        handed: OutboxMessage | None = None
        try:
            async with self.store.transaction() as tx:
                existing = await tx.inbound_case_of(partner.region, envelope.idem_key)
                if existing is not None:  # the same case filed again under a new message id
                    receipt["receipt_no"] = case_id = existing
                else:
                    handed = await self._file_inbound(
                        tx, partner, envelope, resolution.local_code, domain, form, case_id,
                        taken, licences,
                    )  # fmt: skip
                await tx.remember_inbound(
                    partner.region, envelope.msg_id, envelope.kind, case_id, receipt
                )
        finally:
            if taken:  # those the case did not take (filed before, or a failed write)
                await self.store.discard_materials([m.id for m in taken])
        if handed is not None:
            hand_over(self.dispatcher, [handed])
        return await self._answer(
            partner, envelope, receipt, "accepted", case_id, resolution.local_code
        )

    async def _file_inbound(
        self,
        tx: Transaction,
        partner: Partner,
        envelope: env.Envelope,
        local_matter: str,
        domain: str,
        form: dict[str, Any],
        case_id: str,
        taken: list[MaterialRecord],
        licences: list[dict[str, str]],
    ) -> OutboxMessage:
        """The new inbound case, its materials, and its hand-over to our back office (the
        materials named in it, the back office reads them through us: ``services.materials``)."""
        now = time.time()
        await tx.insert_inbound_case(
            InboundCase(
                id=case_id,
                partner=partner.region,
                partner_ref=envelope.idem_key,
                partner_matter=envelope.matter,
                local_matter=local_matter,
                domain=domain,
                created=now,
                updated=now,
                status=Inbound.IN_OFFICE.value,
                form=form,
                result=None,
            )
        )
        if await tx.attach_materials(case_id, [m.id for m in taken]) != len(taken):
            raise InboundRefused("MATERIAL_GONE", "a material was not kept: send again", envelope)
        for licence in licences:
            await tx.add_licence(
                case_id, licence["material"], licence["identifier"], licence["holder"]
            )
        handed: dict[str, Any] = {"case_id": case_id, "matter": local_matter, "form": form}
        if taken:
            handed["materials"] = [
                {"code": m.code, "type": m.kind, "size": m.size, "sm3": m.sm3} for m in taken
            ]
        if licences:
            handed["licences"] = licences
        return await tx.enqueue(
            msg_id=f"local-{case_id}",
            case_id=case_id,
            sub_id=HAND_OVER,
            partner="local",
            domain=domain,
            kind=HAND_OVER,
            matter=local_matter,
            payload=orjson.dumps(handed),
            envelope=b"",
            lease=self.dispatcher.lease_for("local"),
        )

    async def _reject(
        self, partner: Partner, envelope: env.Envelope, code: str, message: str
    ) -> env.Envelope:
        """A valid, authentic message we cannot act on: a sealed business refusal (not a fault)."""
        reply = {"status": "rejected", "code": code, "message": message}
        await self._remember(partner, envelope, None, reply)
        return await self._answer(partner, envelope, reply, "rejected", code=code)

    async def report(self, envelope: env.Envelope) -> env.Envelope:
        """A partner reports the result of one of our messages (``idem_key`` = our message id)."""
        partner, payload, cached = await self._open(envelope, "result")
        if cached is not None:
            return cached
        message = await self.store.message(envelope.idem_key)
        if message is None or message.partner != partner.region or message.partner == "local":
            raise InboundRefused(
                "MESSAGE_NOT_YOURS", "no message of ours to you has this id", envelope
            )
        try:
            answer = answers.parse(answers.PartnerAnswer, payload)
        except answers.AnswerMalformed as exc:
            raise InboundRefused("RESULT_MALFORMED", str(exc), envelope) from None
        applied = await self.cases.result_reported(message, answer, envelope)
        async with self.store.transaction() as tx:
            if not applied:  # noted on the case, by its digest: the body is in the log
                await tx.add_step(
                    message.case_id,
                    "partner_reported_result",
                    message.sub_id,
                    {
                        "partner": partner.region,
                        "status": answer.status,
                        "code": answer.code,
                        "digest": envelope.digest,
                    },
                )
            await tx.remember_inbound(
                partner.region,
                envelope.msg_id,
                envelope.kind,
                message.case_id,
                {"status": "accepted"},
            )
        return await self._answer(
            partner, envelope, {"status": "accepted"}, "accepted", message.case_id
        )

    async def status(self, envelope: env.Envelope) -> env.Envelope:
        partner, payload, cached = await self._open(envelope, "query")
        if cached is not None:
            return cached
        try:
            reference = answers.parse(answers.StatusQuery, payload).receipt_no
        except answers.AnswerMalformed as exc:
            raise InboundRefused(
                "PAYLOAD_MALFORMED", f'a status query holds {{"receipt_no": "…"}}: {exc}', envelope
            ) from None
        filed = await self.store.inbound_case(reference)
        if filed is None or filed.partner != partner.region:
            # another partner's case and no case at all look the same from outside
            raise InboundRefused(
                "CASE_NOT_YOURS", "you filed no case with this receipt number", envelope
            )
        answer = {
            "status": "accepted",
            "receipt_no": filed.id,
            "case_status": filed.status,
            "matter": filed.local_matter,
            "updated": iso_of(filed.updated, ms=False),
            "result": filed.result,
        }
        await self._remember(partner, envelope, filed.id, answer)
        return await self._answer(partner, envelope, answer, "accepted", filed.id)

    async def witness(self, envelope: env.Envelope) -> env.Envelope:
        """A partner asks us to countersign one of its exchange log's checkpoints (the answer,
        a countersignature or a refusal, is remembered like any other)."""
        partner, payload, cached = await self._open(envelope, WITNESS)
        if cached is not None:
            return cached
        answer = await self.witnesses.countersign(partner.region, payload)
        await self._remember(partner, envelope, None, answer)
        outcome = "accepted" if answer["status"] == "accepted" else "rejected"
        return await self._answer(partner, envelope, answer, outcome, code=answer.get("code"))

    # -- our back office's answer, and the result back to the partner -------------------------

    async def office_done(self, message: Any, answer: dict[str, Any]) -> None:
        """The back office decided an inbound case: record it, send the result to the partner."""
        outcome = "done" if answer.get("status") == "done" else "rejected"
        result = answer.get("result") if isinstance(answer.get("result"), dict) else {}
        filed = await self.store.inbound_case(message.case_id)
        if filed is None:
            async with self.store.transaction() as tx:
                await tx.finish(message.msg_id)
            return
        partner = self.partners.get(filed.partner)
        payload = orjson.dumps(
            {
                "receipt_no": message.case_id,
                "outcome": outcome,
                "result": result,
                "message": answer.get("message"),
            }
        )
        msg_id = message_id("result", message.case_id)
        # Sealed before the transaction, so the write holds the lock only for the writes.
        sealed = self.sealer.seal(
            payload,
            receiver=env.Party(partner.region, partner.node),
            kind="result",
            matter=filed.partner_matter,
            idem_key=filed.partner_ref,
            msg_id=msg_id,
        )
        async with self.store.transaction() as tx:
            current = await tx.inbound_case(message.case_id)  # locked until the commit
            await tx.finish(message.msg_id)
            event = (
                InboundEvent.DECIDED_DONE if outcome == "done" else InboundEvent.DECIDED_REJECTED
            )
            if current is None or not INBOUND.allows(current.status, event):
                return  # decided already (a resend of the hand-over)
            await tx.move_inbound_case(message.case_id, event, result)
            result_message = await tx.enqueue(
                msg_id=msg_id,
                case_id=message.case_id,
                sub_id=RESULT,
                partner=partner.region,
                domain=filed.domain,
                kind=RESULT,
                matter=filed.partner_matter,
                payload=payload,
                envelope=sealed.to_json(),
                lease=self.dispatcher.lease_for(partner.region),
            )
        hand_over(self.dispatcher, [result_message])
        await self.audit.append_all(
            [
                AuditEvent(
                    "office.decided",
                    "internal",
                    outcome,
                    case_id=message.case_id,
                    local_matter=message.matter,
                    partner=filed.partner,
                ),
                AuditEvent(
                    "message.queued",
                    "outbound",
                    "queued",
                    case_id=message.case_id,
                    message_id=msg_id,
                    partner=filed.partner,
                    partner_matter=filed.partner_matter,
                    actor=sealed.sender_key_id,
                    envelope=sealed.as_dict(),
                ),
            ]
        )
