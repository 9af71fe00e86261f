"""The case service: the thin shell between the windows API, the store, the core and the log.

Filing, cancelling, retrying and the partner's replies all follow one pattern: load the case,
compute the new sub-matter states with ``gateway.core.cases`` (pure), and write the states, the
timeline steps and any newly sealed outbox messages in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from gateway.audit.log import AuditEvent, AuditWriter
from gateway.core import answers, lifecycle
from gateway.core import cases as casecore
from gateway.core import materials as materialcore
from gateway.core.cases import CaseInvalid, PlannedSub, Reply, SubState
from gateway.core.lifecycle import HAND_OVER, QUERY, RESULT, WITNESS, InboundEvent, MsgEvent
from gateway.core.problems import FieldProblem, GatewayError
from gateway.logs import get_logger
from gateway.partners import Partner, PartnerRegistry
from gateway.services.materials import seal_for_partner
from gateway.storage import (
    AlreadyThere,
    CaseRow,
    Increment,
    MaterialRecord,
    NewCase,
    OutboxMessage,
    Store,
    Transaction,
)
from mappings.materials import GivenFile, GivenLicence
from mappings.registry import Registry
from mappings.transform import TransformError
from security import envelope as env
from security.errors import SecurityError
from security.sealing import Opener, Sealer

log = get_logger("gateway.services.cases")


class Dispatcher(Protocol):
    """The delivery worker, as the case service sees it."""

    def lease_for(self, partner: str) -> tuple[str, float] | None:
        """(owner, lease end) if this instance can send to ``partner`` at once, else None."""
        ...

    def dispatch(self, messages: list[OutboxMessage]) -> None:
        """Send these messages, already leased to this instance."""
        ...

    def wake(self) -> None:
        """Look for due messages now."""
        ...


class Witnesses(Protocol):
    """The witness service, as the case service sees it: it takes the answers to witness
    requests, which go through the outbox like any message."""

    async def answered(self, message: OutboxMessage, reply: Reply) -> None: ...


class NoDispatcher:
    """Until a worker is attached: everything waits in the outbox."""

    def lease_for(self, partner: str) -> tuple[str, float] | None:
        return None

    def dispatch(self, messages: list[OutboxMessage]) -> None:
        raise AssertionError("nothing is leased without a worker")

    def wake(self) -> None:
        pass


def hand_over(dispatcher: Dispatcher, messages: list[OutboxMessage]) -> None:
    """After the commit that wrote ``messages``: send those leased to us, wake the worker for
    the rest."""
    leased = [m for m in messages if m.lease_owner is not None]
    if leased:
        dispatcher.dispatch(leased)
    if len(leased) < len(messages):
        dispatcher.wake()


@dataclass
class Queued:
    """What a case change put in the outbox."""

    sent: list[tuple[PlannedSub, env.Envelope]] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)
    states: list[SubState] = field(default_factory=list)  # the case's states after queuing
    steps: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # "queued" steps


@dataclass(frozen=True)
class Filing:
    """A validated filing request (the API's pydantic model, reduced to what the core needs)."""

    bundle: str | None
    matter: str | None
    form: dict[str, Any]
    applicant_id: str | None
    hall: str
    clerk: str | None
    token_name: str
    materials: tuple[MaterialRecord, ...] = ()  # uploaded files (``services.materials``)
    licences: tuple[GivenLicence, ...] = ()  # 电子证照 standing in for materials

    @property
    def given(self) -> materialcore.CaseMaterials:
        return materialcore.CaseMaterials(
            tuple(
                GivenFile(m.code, None if m.kind == "unknown" else m.kind, m.size)
                for m in self.materials
            ),
            self.licences,
        )


# A case's files all told (a per-material limit is the catalogue's ``max_mib``).
MAX_CASE_MATERIAL_BYTES = 100 * 1024 * 1024


# Where a request's body names the 电子证照 standing in for materials (XGW-ENV/2, §11).
LICENCES_MEMBER = "xgw_licences"


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class CaseService:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        partners: PartnerRegistry,
        sealer: Sealer,
        opener: Opener,
        audit: AuditWriter,
        region: str,
        result_query_after: float = 3600.0,
        result_overdue: float = 7 * 86400.0,
        dispatcher: Dispatcher | None = None,
        witnesses: Witnesses | None = None,
        case_material_bytes: int = MAX_CASE_MATERIAL_BYTES,
    ) -> None:
        """``dispatcher``: what sets written messages going (the delivery worker); without
        one they wait in the outbox for a running gateway to claim them. ``witnesses``: takes
        the partners' answers to our witness requests (messages of no case)."""
        self.store, self.registry, self.partners = store, registry, partners
        self.sealer, self.opener, self.audit, self.region = sealer, opener, audit, region
        self.result_query_after, self.result_overdue = result_query_after, result_overdue
        self.dispatcher: Dispatcher = dispatcher or NoDispatcher()
        self.witnesses = witnesses
        self.case_material_bytes = case_material_bytes

    # -- filing --------------------------------------------------------------------------------

    def _bundle(self, filing: Filing) -> Any:
        if filing.bundle is not None:
            bundle = self.registry.bundles.get(filing.bundle)
            if bundle is None or bundle.region != self.region:
                raise GatewayError(
                    "BUNDLE_UNKNOWN",
                    422,
                    "Unknown 一件事 bundle",
                    f"bundle {filing.bundle} is not offered in {self.region}",
                )
            return bundle
        assert filing.matter is not None
        catalogue = self.registry.catalogues.get(self.region)
        matter = catalogue.get(filing.matter) if catalogue is not None else None
        if matter is None:
            raise GatewayError(
                "MATTER_UNKNOWN",
                422,
                "Unknown matter code",
                f"matter {filing.matter} is not in the catalogue of {self.region}",
            )
        return casecore.bundle_for_matter(matter.local_code, self.region)

    async def file(self, filing: Filing, idem_key: str, body_hash: str) -> tuple[CaseRow, bool]:
        """(case, created). The same key and body return the same case; another body is 409."""
        existing = await self.store.case_by_idem(idem_key)
        if existing is not None:
            if existing.request_hash != body_hash:
                raise GatewayError(
                    "IDEMPOTENCY_CONFLICT",
                    409,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used with a different request body",
                )
            return existing, False
        bundle = self._bundle(filing)
        filed_on = datetime.now(UTC).date()
        # every problem at once: the form's and the materials' (申请材料)
        material_problems = [
            FieldProblem(f"materials.{p.material}", p.message, p.error)
            for p in materialcore.problems_of(
                self.registry,
                self.region,
                [sub.matter for sub in bundle.sub_matters],
                filing.given,
                self.case_material_bytes,
            )
        ]
        try:
            plan = casecore.plan_case(self.registry, self.region, bundle, filing.form, filed_on)
        except CaseInvalid as exc:
            # The form is what is wrong; each listed error keeps its own code.
            raise GatewayError(
                "FORM_INVALID",
                422,
                "The case cannot be filed",
                "see errors for every problem",
                [_field_problem(p) for p in exc.problems] + material_problems,
            ) from None
        if material_problems:
            raise GatewayError(
                "MATERIALS_INVALID",
                422,
                "The case's materials are not complete",
                "see errors for every problem with the materials (申请材料)",
                material_problems,
            )
        case_id = f"{self.region}-{filed_on:%Y%m%d}-{uuid.uuid4().hex[:12]}"
        states = casecore.initial_states(plan)
        now = time.time()
        case = NewCase(
            id=case_id,
            created=now,
            updated=now,
            status=casecore.case_status(states),
            hall=filing.hall,
            clerk=filing.clerk,
            token_name=filing.token_name,
            bundle=bundle.code,
            title=bundle.name,
            filed_on=filed_on.isoformat(),
            idem_key=idem_key,
            request_hash=body_hash,
            person=None,
            form=filing.form,
            plan=plan,
            states=states,
            version=1,
        )
        try:
            async with self.store.transaction() as tx:
                # the materials first: the messages queued below carry them
                if await tx.attach_materials(case_id, [m.id for m in filing.materials]) != len(
                    filing.materials
                ):
                    raise GatewayError(
                        "MATERIAL_GONE",
                        409,
                        "A material was not kept",
                        "an uploaded material was removed before the case was filed; file again",
                    )
                for licence in filing.licences:
                    await tx.add_licence(case_id, licence.code, licence.identifier, licence.holder)
                # the case row first: its timeline's steps are numbered under its lock
                queued = await self._queue_ready(tx, case, states, hold=True, save=False)
                case.states = queued.states
                case.status = casecore.case_status(queued.states)
                await tx.insert_case(case)  # one write of the row, with the states as queued
                filed: dict[str, Any] = {"bundle": bundle.code, "hall": filing.hall}
                if filing.materials or filing.licences:
                    filed["materials"] = sorted(filing.given.codes)
                await tx.add_step(case_id, "filed", detail=filed)
                for planned in plan:
                    if planned.local:
                        await tx.add_step(
                            case_id,
                            "awaiting_local_office",
                            planned.sub_id,
                            {"matter": planned.matter},
                        )
                for sub_id, detail in queued.steps:
                    await tx.add_step(case_id, "queued", sub_id, detail)
        except AlreadyThere:
            # Two requests with one key raced: the other one won; answer as it would.
            winner = await self.store.case_by_idem(idem_key)
            if winner is None or winner.request_hash != body_hash:
                raise GatewayError(
                    "IDEMPOTENCY_CONFLICT",
                    409,
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used with a different request body",
                ) from None
            return winner, False
        logged = asyncio.ensure_future(  # written while the filing itself reaches the disk
            self.audit.append_all(
                [
                    AuditEvent(
                        "case.filed",
                        "internal",
                        "ok",
                        case_id=case_id,
                        local_matter=bundle.code,
                        actor=filing.token_name,
                        person_id=filing.applicant_id,
                        details={"hall": filing.hall, "sub_matters": len(plan)},
                    ),
                    *self._queued_events(case_id, queued.sent, filing.applicant_id),
                ]
            )
        )
        try:
            # A filing's first messages leave once the filing is on disk: were it lost, the
            # window would file again, perhaps changed, and the partner would hold an orphan.
            await self.store.durable()
            if any(m.lease_owner is None for m in queued.messages):  # held: release them
                async with self.store.transaction(volatile=True) as tx:
                    await tx.release_hold(case_id)
            hand_over(self.dispatcher, queued.messages)
        finally:
            await logged
        stored = await self.store.case(case_id)
        assert stored is not None
        return stored, True

    async def _seal_request(
        self,
        tx: Transaction,
        case: CaseRow,
        planned: PlannedSub,
        partner: Partner,
        attempt: int,
        domain: str,
    ) -> tuple[str, bytes, env.Envelope]:
        """(message id, plaintext, envelope) of a sub-matter's request. To a partner on
        XGW-ENV/2 it carries the materials its matter asks for: the files sealed into the
        outbox under the message's content key, the 电子证照 references in the body."""
        assert planned.partner_code is not None and planned.payload is not None
        msg_id = casecore.message_id(case.idem_key, case.request_hash, planned.sub_id, str(attempt))
        body: dict[str, Any] = planned.payload
        version = partner.envelope_for(domain)
        wrapped: env.WrappedKey | None = None
        manifest: tuple[env.ManifestEntry, ...] = ()
        carried = (  # XGW-ENV/1 carries none; a matter that asks for none: nothing to read
            materialcore.codes_for(self.registry, self.region, planned.matter)
            if version == 2
            else frozenset()
        )
        if carried:
            materials = [m for m in await tx.case_materials(case.id) if m.code in carried]
            licences = [{"material": m.code, **m.licence} for m in materials if m.licence]
            if licences:
                body = {**body, LICENCES_MEMBER: licences}
            wrapped, manifest = await seal_for_partner(
                tx, self.sealer, partner.region, msg_id, [m for m in materials if m.licence is None]
            )
        payload = orjson.dumps(body)
        envelope = self.sealer.seal(
            payload,
            receiver=env.Party(partner.region, partner.node),
            kind="request",
            matter=planned.partner_code,
            idem_key=f"{case.id}.{planned.sub_id}",
            msg_id=msg_id,
            version=version,
            manifest=manifest,
            wrapped=wrapped,
        )
        return msg_id, payload, envelope

    async def _queue_ready(
        self,
        tx: Transaction,
        case: CaseRow,
        states: list[SubState],
        hold: bool = False,
        save: bool = True,
    ) -> Queued:
        """Seal and enqueue every sub-matter that has become ready; save the new states and
        write the "queued" steps (``save`` False: the caller writes the case, then the steps).
        A message this instance can send at once is leased to it in the same write (no claim
        needed); ``hold``: the others wait for ``release_hold`` (a filing not yet on disk).
        After the commit, ``hand_over`` sets them going."""
        ready = casecore.ready(states)
        attempts = {s.sub_id: s.attempts for s in states}
        queued = Queued()
        for sub_id in ready:
            planned = case.plan_of(sub_id)
            assert planned.partner_code is not None
            partner = self.partners.get(planned.jurisdiction)
            domain = self.registry.matter(self.region, planned.matter).domain
            msg_id, payload, envelope = await self._seal_request(
                tx, case, planned, partner, attempts[sub_id], domain
            )
            lease = self.dispatcher.lease_for(partner.region)
            message = await tx.enqueue(
                msg_id=msg_id,
                case_id=case.id,
                sub_id=sub_id,
                partner=partner.region,
                domain=domain,
                kind=planned.kind,
                matter=planned.partner_code,
                payload=payload,
                envelope=envelope.to_json(),
                held=hold and lease is None,
                lease=lease,
            )
            queued.steps.append(
                (
                    sub_id,
                    {
                        "partner": partner.region,
                        "matter": planned.partner_code,
                        "message_id": msg_id,
                    },
                )
            )
            queued.sent.append((planned, envelope))
            queued.messages.append(message)
        queued.states = casecore.mark_queued(states, ready)
        if save:
            for sub_id, detail in queued.steps:
                await tx.add_step(case.id, "queued", sub_id, detail)
            await tx.save_states(case, queued.states, casecore.case_status(queued.states))
        return queued

    @staticmethod
    def _queued_events(
        case_id: str, sent: list[tuple[PlannedSub, env.Envelope]], person: str | None = None
    ) -> list[AuditEvent]:
        return [
            AuditEvent(
                "message.queued",
                "outbound",
                "queued",
                case_id=case_id,
                message_id=envelope.msg_id,
                partner=planned.jurisdiction,
                local_matter=planned.matter,
                partner_matter=planned.partner_code,
                actor=envelope.sender_key_id,
                person_id=person,
                envelope=envelope.as_dict(),
            )
            for planned, envelope in sent
        ]

    # -- replies and failures from delivery ------------------------------------------------------

    async def reseal(self, message: OutboxMessage) -> env.Envelope:
        """A fresh seal (new nonce and time) for the same message id: the partner's idempotency
        key stays, the replay window is satisfied again."""
        old = env.envelope_from_record(message.envelope)
        async with self.store.transaction() as tx:
            wrapped: env.WrappedKey | None = None
            manifest: tuple[env.ManifestEntry, ...] = ()
            if old.materials:  # its materials again, under the new content key
                await tx.drop_outbox_materials(message.msg_id)
                files = {m.code: m for m in await tx.case_materials(message.case_id)}
                wrapped, manifest = await seal_for_partner(
                    tx,
                    self.sealer,
                    old.receiver_region,
                    old.msg_id,
                    [files[entry.code] for entry in old.manifest],
                )
            envelope = self.sealer.seal(
                message.payload,
                receiver=old.receiver,
                kind=old.kind,
                matter=old.matter,
                idem_key=old.idem_key,
                msg_id=old.msg_id,
                version=old.version,
                manifest=manifest,
                wrapped=wrapped,
            )
            await tx.set_envelope(message.msg_id, envelope.to_json())
        return envelope

    async def open_reply(self, message: OutboxMessage, envelope: env.Envelope) -> Reply:
        opened = await self.opener.open(envelope)
        if envelope.sender_region != message.partner or envelope.idem_key != message.msg_id:
            raise SecurityError("REPLY_MISMATCH", "the reply does not answer this message")
        try:
            body = orjson.loads(opened.plaintext)
        except orjson.JSONDecodeError:
            raise SecurityError("REPLY_MALFORMED", "the reply is not JSON") from None
        return reply_from(body)

    async def delivered(
        self, message: OutboxMessage, reply: Reply, reply_envelope: env.Envelope
    ) -> None:
        if message.kind == RESULT:  # the result of an inbound case reached its partner
            async with self.store.transaction() as tx:
                await tx.finish(message.msg_id)
                await tx.move_inbound_case(message.case_id, InboundEvent.RESULT_DELIVERED)
            await self.audit.append(
                _answer_event("message.delivered", message, reply, reply_envelope)
            )
            return
        if message.kind == QUERY:  # the partner's answer to our asking for a result
            await self._query_answered(message, reply, reply_envelope)
            return
        if message.kind == WITNESS:
            assert self.witnesses is not None, "witness messages are made by WitnessService"
            await self.witnesses.answered(message, reply)
            return
        chase: list[OutboxMessage] = []
        async with self.store.transaction() as tx:
            if not await tx.finish(message.msg_id):
                return  # another worker finished it first
            case = await tx.load_case(message.case_id)
            assert case is not None
            planned = case.plan_of(message.sub_id)
            effective, local_result = self._map_answer(planned, reply)
            if not casecore.takes_answer(case.states, message.sub_id, effective):
                # its sub-matter moved on meanwhile (cancelled, answered through a resend):
                # the answer is kept on the timeline and in the log, and changes nothing
                await tx.add_step(
                    case.id, "answer_not_applied", message.sub_id, {"code": effective.code}
                )
                queued = Queued()
            else:
                states = casecore.apply_reply(case.states, message.sub_id, effective, local_result)
                if effective.accepted and effective.pending:  # ask, should its report be lost
                    chase.append(
                        await self._enqueue_query(tx, message, asked=0, accepted_at=time.time())
                    )
                step = (
                    "accepted_result_pending"
                    if effective.accepted and effective.pending
                    else "done"
                    if effective.accepted
                    else "rejected_by_partner"
                )
                await tx.add_step(
                    case.id,
                    step,
                    message.sub_id,
                    {
                        "receipt_no": reply.extras.get("receipt_no"),
                        "code": effective.code,
                        "message": effective.message,
                    },
                )
                queued = await self._queue_ready(tx, case, states)  # saves the states too
        hand_over(self.dispatcher, queued.messages + chase)
        event = "message.delivered" if effective.accepted else "message.refused"
        await self._audit_answer(event, message, planned, effective, reply_envelope, queued.sent)

    async def _audit_answer(
        self,
        event: str,
        message: OutboxMessage,
        planned: PlannedSub,
        answer: Reply,
        envelope: env.Envelope,
        sent: list[tuple[PlannedSub, env.Envelope]],
    ) -> None:
        """A partner's answer (a reply or a later report), then what it set going."""
        await self.audit.append_all(
            [
                _answer_event(event, message, answer, envelope, planned.matter),
                *self._queued_events(message.case_id, sent),
            ]
        )

    def _map_answer(self, planned: PlannedSub, reply: Reply) -> tuple[Reply, dict[str, Any]]:
        """The partner's answer in our schema (answers through their transform's inverse)."""
        local_result: dict[str, Any] = {"receipt_no": reply.extras.get("receipt_no")}
        if reply.accepted and not reply.pending and planned.kind == "answer" and planned.transform:
            try:
                local_result |= self.registry.transforms[planned.transform].inbound(
                    reply.result or {}
                )
            except TransformError as exc:
                return Reply(
                    False,
                    "ANSWER_INVALID",
                    "the partner's answer does not fit "
                    f"{planned.transform}: {exc.problems[0].path}: {exc.problems[0].message}",
                ), local_result
        return reply, local_result

    async def result_reported(
        self, message: OutboxMessage, answer: answers.PartnerAnswer, envelope: env.Envelope
    ) -> bool:
        """A partner reported, later, the result of a sub-matter it had accepted as pending
        (its report already checked). False if that sub-matter was not awaiting a result (the
        report is only recorded)."""
        return await self._settle_result(message, reply_of(answer), envelope, "result.reported")

    async def _settle_result(
        self, message: OutboxMessage, reply: Reply, envelope: env.Envelope, event: str
    ) -> bool:
        """A result for the sub-matter ``message`` was for, reported or asked for: applied if
        it still awaits one (its queries still to come are then withdrawn). False if not."""
        async with self.store.transaction() as tx:
            case = await tx.load_case(message.case_id)
            if case is None:
                return False
            planned = case.plan_of(message.sub_id)
            effective, local_result = self._map_answer(planned, reply)
            try:
                states = casecore.apply_result(case.states, message.sub_id, effective, local_result)
            except ValueError:  # not awaiting a result: the caller notes the report
                return False
            await tx.add_step(
                case.id,
                "done" if effective.accepted else "rejected_by_partner",
                message.sub_id,
                {"reported": True, "code": effective.code, "message": effective.message},
            )
            await tx.move_messages(
                MsgEvent.CANCEL, {"case_id": case.id, "sub_id": message.sub_id, "kind": QUERY}
            )
            queued = await self._queue_ready(tx, case, states)  # saves the states too
        hand_over(self.dispatcher, queued.messages)
        await self._audit_answer(event, message, planned, effective, envelope, queued.sent)
        return True

    # -- asking for results not reported ----------------------------------------------------------

    async def _enqueue_query(
        self, tx: Transaction, message: OutboxMessage, asked: int, accepted_at: float
    ) -> OutboxMessage:
        """The next query for the result of ``message`` (ours, answered "pending"), due after
        ``casecore.result_query_delay``. ``message`` may be an earlier query: the original id
        and the acceptance time travel in the payload."""
        about = orjson.loads(message.payload) if message.kind == QUERY else {}
        original = about.get("msg_id", message.msg_id)
        accepted_at = about.get("accepted_at", accepted_at)
        payload = orjson.dumps({"msg_id": original, "asked": asked + 1, "accepted_at": accepted_at})
        partner = self.partners.get(message.partner)
        msg_id = casecore.message_id("query", original, str(asked + 1))
        sealed = self.sealer.seal(
            orjson.dumps({"msg_id": original}),
            receiver=env.Party(partner.region, partner.node),
            kind=QUERY,
            matter=message.matter,
            idem_key=original,
            msg_id=msg_id,
        )
        return await tx.enqueue(
            msg_id=msg_id,
            case_id=message.case_id,
            sub_id=message.sub_id,
            partner=message.partner,
            domain=message.domain,
            kind=QUERY,
            matter=message.matter,
            payload=payload,
            envelope=sealed.to_json(),
            due=time.time() + casecore.result_query_delay(asked, self.result_query_after),
        )

    async def _query_answered(
        self, message: OutboxMessage, reply: Reply, envelope: env.Envelope
    ) -> None:
        """The partner answered our query: a result settles the sub-matter; "pending" again
        means ask later, and past ``result_overdue`` flag it (an alert line)."""
        async with self.store.transaction() as tx:
            if not await tx.finish(message.msg_id):
                return
        if not reply.pending:
            await self._settle_result(message, reply, envelope, "result.queried")
            return
        about = orjson.loads(message.payload)
        overdue = casecore.result_overdue(about["accepted_at"], time.time(), self.result_overdue)
        async with self.store.transaction() as tx:
            case = await tx.load_case(message.case_id)
            if case is None:
                return
            current = next(s for s in case.states if s.sub_id == message.sub_id)
            if current.status != casecore.AWAITING:
                return  # settled meanwhile
            flagged = overdue and current.error_code != casecore.RESULT_OVERDUE
            if flagged:
                states = casecore.mark_result_overdue(case.states, message.sub_id)
                await tx.add_step(case.id, "result_overdue", message.sub_id, {})
                await tx.save_states(case, states, casecore.case_status(states))
            chase = await self._enqueue_query(tx, message, about["asked"], about["accepted_at"])
        hand_over(self.dispatcher, [chase])
        if flagged:
            # The alert line operators watch for: a result that never came is never forgotten.
            log.error(
                "case.result_overdue",
                alert=True,
                case_id=message.case_id,
                sub_id=message.sub_id,
                partner=message.partner,
            )

    async def retry_scheduled(
        self,
        message: OutboxMessage,
        code: str,
        text: str,
        delay: float,
        counts: bool = True,
        reached: bool = False,
    ) -> None:
        """Back to pending after ``delay``. ``counts``: an attempt was made (not so when the
        partner's circuit was open and nothing was sent); ``reached``: the partner may have
        acted on it."""
        async with self.store.transaction() as tx:
            if reached:
                await self._maybe_delivered(tx, message)
            await tx.move_messages(
                MsgEvent.RETRY,
                {"msg_id": message.msg_id},
                attempts=Increment(1 if counts else 0),
                next_attempt_at=time.time() + delay,
                lease_owner=None,
                lease_until=None,
                last_error_code=code,
                last_error=text,
            )
            if lifecycle.writes_retry_step(message.kind, message.attempts, counts):
                await tx.add_step(
                    message.case_id, "delivery_retrying", message.sub_id, {"code": code}
                )
        if not counts:
            return
        await self.audit.append(
            AuditEvent(
                "delivery.retry",
                "outbound",
                "retry",
                case_id=message.case_id,
                message_id=message.msg_id,
                partner=message.partner,
                partner_matter=message.matter,
                error_code=code,
                details={"attempt": message.attempts + 1, "delay_s": round(delay, 2)},
            )
        )

    @staticmethod
    async def _maybe_delivered(tx: Transaction, message: OutboxMessage) -> None:
        if message.kind in lifecycle.NOT_A_REQUEST:
            return
        case = await tx.load_case(message.case_id)
        if case is not None:
            states = casecore.mark_maybe_delivered(case.states, message.sub_id)
            await tx.save_states(case, states, casecore.case_status(states))

    async def dead(
        self, message: OutboxMessage, code: str, text: str, reached: bool = False
    ) -> None:
        async with self.store.transaction() as tx:
            died = await tx.move_messages(
                MsgEvent.DIE,
                {"msg_id": message.msg_id},
                attempts=Increment(1),
                finished_at=time.time(),
                lease_owner=None,
                lease_until=None,
                last_error_code=code,
                last_error=text,
            )
            if died:  # else it moved on meanwhile (answered, cancelled): no dead letter
                await self._message_died(tx, message, code, text, reached)
        if not died:
            return
        # The alert line operators watch for: exhausted retries never go unnoticed.
        log.error(
            "delivery.dead_letter",
            alert=True,
            message_id=message.msg_id,
            case_id=message.case_id,
            partner=message.partner,
            code=code,
        )
        await self.audit.append(
            AuditEvent(
                "delivery.dead",
                "outbound",
                "dead",
                case_id=message.case_id,
                message_id=message.msg_id,
                partner=message.partner,
                partner_matter=message.matter,
                error_code=code,
            )
        )

    @staticmethod
    async def _message_died(
        tx: Transaction, message: OutboxMessage, code: str, text: str, reached: bool
    ) -> None:
        """What a dead letter means for what it was about, in the dead letter's transaction."""
        if message.kind == WITNESS:  # of no case: the dead letter alert is all it means
            return
        if message.kind in lifecycle.FOR_INBOUND_CASE:
            event = (
                InboundEvent.OFFICE_DEAD if message.kind == HAND_OVER else InboundEvent.RESULT_DEAD
            )
            await tx.move_inbound_case(message.case_id, event)
            return
        case = await tx.load_case(message.case_id)
        assert case is not None
        if message.kind == QUERY:  # we could not ask: the result is overdue, not failed
            states = casecore.mark_result_overdue(case.states, message.sub_id)
        else:
            states = casecore.apply_dead(case.states, message.sub_id, code, text)  # queued
            if reached:
                states = casecore.mark_maybe_delivered(states, message.sub_id)
            await tx.add_step(
                case.id, "dead_letter", message.sub_id, {"code": code, "message": text}
            )
        await tx.save_states(case, states, casecore.case_status(states))

    async def replay(self, msg_id: str, actor: str) -> bool:
        """Send a dead letter again (operator action): same message id, fresh attempts."""
        async with self.store.transaction() as tx:
            message = await tx.message(msg_id)
            if message is None or message.status not in lifecycle.MESSAGE.sources(MsgEvent.REPLAY):
                return False
            await self._requeue_dead(tx, msg_id, message.case_id, message.sub_id, actor)
        await self._audit_replayed(message.case_id, msg_id, actor)
        return True

    @staticmethod
    async def _requeue_dead(
        tx: Transaction, msg_id: str, case_id: str, sub_id: str, actor: str
    ) -> None:
        now = time.time()
        await tx.move_messages(
            MsgEvent.REPLAY,
            {"msg_id": msg_id},
            attempts=0,
            created=now,
            next_attempt_at=now,
            finished_at=None,
        )
        case = await tx.load_case(case_id)
        if case is None:  # an inbound case's hand-over or result: the message alone goes again
            return
        if casecore.sub_allows_resend(case.states, sub_id):  # a query leaves its sub as it is
            states = casecore.resend(case.states, sub_id)
        else:
            states = case.states
        await tx.add_step(case.id, "replayed", sub_id, {"message_id": msg_id, "by": actor})
        await tx.save_states(case, states, casecore.case_status(states))

    async def _audit_replayed(self, case_id: str, msg_id: str, actor: str) -> None:
        await self.audit.append(
            AuditEvent(
                "delivery.replayed",
                "outbound",
                "queued",
                case_id=case_id,
                message_id=msg_id,
                actor=actor,
            )
        )

    # -- window actions --------------------------------------------------------------------------

    async def cancel(self, case: CaseRow, actor: str) -> CaseRow:
        async with self.store.transaction() as tx:
            current = await tx.load_case(case.id)
            assert current is not None
            under_way = await tx.in_flight_count(case.id)
            refusal = casecore.cancel_refusal(current.states, under_way)
            if refusal is not None:
                raise GatewayError(
                    "CASE_NOT_CANCELLABLE", 409, "The case cannot be cancelled", refusal
                )
            await tx.move_messages(MsgEvent.CANCEL, {"case_id": case.id})
            states = casecore.cancel(current.states)
            await tx.add_step(case.id, "cancelled", detail={"by": actor})
            await tx.save_states(current, states, casecore.case_status(states))
        await self.audit.append(
            AuditEvent("case.cancelled", "internal", "ok", case_id=case.id, actor=actor)
        )
        updated = await self.store.case(case.id)
        assert updated is not None
        return updated

    async def retry(self, case: CaseRow, sub_id: str, actor: str) -> CaseRow:
        """A failed sub-matter again. If its last message died undelivered, that very message
        is sent again (the same id: had the partner acted on an attempt that timed out, it
        answers from its records instead of acting twice); after a partner's refusal, a new
        message."""
        async with self.store.transaction() as tx:
            current = await tx.load_case(case.id)
            assert current is not None
            try:
                states = casecore.retry_failed(current.states, sub_id)
            except ValueError as exc:
                raise GatewayError(
                    "SUB_MATTER_NOT_RETRYABLE", 409, "Nothing to retry", str(exc)
                ) from None
            await tx.add_step(case.id, "retry_requested", sub_id, {"by": actor})
            last = await tx.last_message(case.id, sub_id)
            dead = last[0] if last is not None and lifecycle.retry_resends(last[1]) else None
            if dead is not None:
                await self._requeue_dead(tx, dead, case.id, sub_id, actor)
            else:
                queued = await self._queue_ready(tx, current, states)
        if dead is not None:
            self.dispatcher.wake()
            await self._audit_replayed(case.id, dead, actor)
        else:
            hand_over(self.dispatcher, queued.messages)
            await self.audit.append_all(self._queued_events(case.id, queued.sent))
        updated = await self.store.case(case.id)
        assert updated is not None
        return updated

    async def complete_local(
        self, case: CaseRow, sub_id: str, result: dict[str, Any] | None, actor: str
    ) -> CaseRow:
        async with self.store.transaction() as tx:
            current = await tx.load_case(case.id)
            assert current is not None
            try:
                states = casecore.complete_local(current.states, sub_id, result)
            except ValueError as exc:
                raise GatewayError(
                    "SUB_MATTER_NOT_LOCAL", 409, "Not a local sub-matter", str(exc)
                ) from None
            await tx.add_step(case.id, "done_locally", sub_id, {"by": actor})
            queued = await self._queue_ready(tx, current, states)
        hand_over(self.dispatcher, queued.messages)
        await self.audit.append_all(
            [
                AuditEvent(
                    "case.local_done",
                    "internal",
                    "ok",
                    case_id=case.id,
                    actor=actor,
                    details={"sub_matter": sub_id},
                ),
                *self._queued_events(case.id, queued.sent),
            ]
        )
        updated = await self.store.case(case.id)
        assert updated is not None
        return updated


def _answer_event(
    event: str,
    message: OutboxMessage,
    answer: Reply,
    envelope: env.Envelope,
    local_matter: str | None = None,
) -> AuditEvent:
    """The log entry of a partner's answer to one of our messages."""
    return AuditEvent(
        event,
        "inbound",
        "accepted" if answer.accepted else "rejected",
        case_id=message.case_id,
        message_id=message.msg_id,
        partner=message.partner,
        local_matter=local_matter,
        partner_matter=message.matter,
        error_code=answer.code,
        actor=envelope.sender_key_id,
        envelope=envelope.as_dict(),
    )


def _field_problem(problem: casecore.Problem) -> Any:
    from gateway.core.problems import FieldProblem

    return FieldProblem(problem.location, problem.message, problem.code)


def reply_from(body: Any) -> Reply:
    """A partner's answer body (``gateway.core.answers.PartnerAnswer``), or REPLY_MALFORMED."""
    try:
        answer = answers.parse(answers.PartnerAnswer, body)
    except answers.AnswerMalformed as exc:
        raise SecurityError("REPLY_MALFORMED", f"the answer does not fit: {exc}") from None
    return reply_of(answer)


def reply_of(answer: answers.PartnerAnswer) -> Reply:
    """A checked answer as the core reads it."""
    return Reply(
        answer.status != "rejected",
        answer.code,
        answer.message,
        answer.result,
        {"receipt_no": answer.receipt_no},
        pending=answer.status == "pending",
    )
