"""Witnesses: partners countersign our exchange log's checkpoints, and we theirs.

Each checkpoint this node signs goes, as a sealed ``witness`` message through the outbox (so it
is retried and never lost), to every partner whose exchanges its batch holds — or, where none,
to the configured ``audit_witness``. The partner countersigns the checkpoint's hash and keeps
what it saw; we keep its countersignature beside the checkpoint. A partner refuses a checkpoint
that contradicts one it witnessed before (``CHECKPOINT_CONFLICT``): the log's end was rewritten
(or restored from a backup), which its own node can then no longer hide. Partners' checkpoints
are witnessed by us the same way (``countersign``). Rules: ``security.auditchain``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.audit.log import AuditEvent, AuditWriter, LogDamaged, now_iso
from gateway.core.cases import Reply
from gateway.core.lifecycle import WITNESS
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.partners import PartnerRegistry
from gateway.services.cases import Dispatcher, hand_over
from gateway.storage import AlreadyThere, OutboxMessage, Store
from security import auditchain
from security import envelope as env
from security.auditchain import Checkpoint, Witness
from security.backend import CryptoBackend
from security.errors import SecurityError
from security.sealing import Sealer
from security.trust import TrustStore

log = get_logger("gateway.services.witness")

AUDIT_MATTER = "XGW-AUDIT"  # the envelope's matter for witness messages: no catalogue's


def witness_message_id(checkpoint: Checkpoint, partner: str) -> str:
    """One per checkpoint and witness; with part of the checkpoint's hash, so that a rewritten
    checkpoint up to the same seq is asked for, not taken for the one asked before."""
    return f"W-{checkpoint.node}-{checkpoint.to_seq}-{checkpoint.hash[:16]}-{partner}"


class WitnessService:
    def __init__(
        self,
        store: Store,
        audit: AuditWriter,
        partners: PartnerRegistry,
        sealer: Sealer,
        trust: TrustStore,
        backend: CryptoBackend,
        region: str,
        fallback: str | None,
        metrics: Metrics,
        dispatcher: Dispatcher,
    ) -> None:
        self.store, self.audit, self.partners = store, audit, partners
        self.sealer, self.trust, self.backend, self.region = sealer, trust, backend, region
        self.fallback, self.metrics, self.dispatcher = fallback, metrics, dispatcher

    # -- our checkpoints, witnessed by partners ----------------------------------------------

    def witnesses_of(self, batch_partners: list[str]) -> list[str]:
        """Who witnesses a batch: the partners it holds exchanges with that witness (configured,
        and not us), else the configured fallback witness."""
        chosen = [
            region
            for region in batch_partners
            if region in self.partners.partners and self.partners.partners[region].witness
        ]
        if not chosen and self.fallback is not None and self.fallback in self.partners.partners:
            chosen = [self.fallback]
        return chosen

    async def ask(self, checkpoint: Checkpoint) -> None:
        """Queue a witness request for ``checkpoint`` to each of its witnesses."""
        found = await asyncio.to_thread(self.audit.log.partners_of, checkpoint)
        payload = orjson.dumps(checkpoint.as_dict())
        queued: list[OutboxMessage] = []
        for region in self.witnesses_of(found):
            partner = self.partners.get(region)
            msg_id = witness_message_id(checkpoint, region)
            sealed = self.sealer.seal(
                payload,
                receiver=env.Party(partner.region, partner.node),
                kind=WITNESS,
                matter=AUDIT_MATTER,
                idem_key=f"{checkpoint.node}:{checkpoint.to_seq}",
                msg_id=msg_id,
            )
            try:
                async with self.store.transaction() as tx:
                    queued.append(
                        await tx.enqueue(
                            msg_id=msg_id,
                            case_id=f"audit:{checkpoint.node}",
                            sub_id=str(checkpoint.to_seq),
                            partner=region,
                            domain=partner.witness_domain,
                            kind=WITNESS,
                            matter=AUDIT_MATTER,
                            payload=payload,
                            envelope=sealed.to_json(),
                        )
                    )
            except AlreadyThere:  # asked already (a checkpoint is asked for once)
                continue
        hand_over(self.dispatcher, queued)

    async def answered(self, message: OutboxMessage, reply: Reply) -> None:
        """A partner's answer to our witness request: its countersignature, checked and kept,
        or its refusal — an alert when it says our checkpoint contradicts one it witnessed."""
        async with self.store.transaction() as tx:
            if not await tx.finish(message.msg_id):
                return
        checkpoint = auditchain.checkpoint_from(orjson.loads(message.payload))
        if not reply.accepted:
            self.metrics.witness_refusals.labels(message.partner, reply.code or "").inc()
            log.error(
                "audit.witness_refused",
                alert=True,
                partner=message.partner,
                node=checkpoint.node,
                to_seq=checkpoint.to_seq,
                code=reply.code,
            )
            await self._audit("audit.witness_refused", message, checkpoint, reply.code)
            return
        problem = None
        try:
            witness = auditchain.witness_from(reply.result)
            problem = self._countersignature_problem(witness, checkpoint, message.partner)
        except ValueError as exc:
            problem = f"the countersignature is malformed: {exc}"
        if problem is not None:
            log.error("audit.witness_invalid", partner=message.partner, problem=problem)
            await self._audit("audit.witness_invalid", message, checkpoint, "WITNESS_INVALID")
            return
        await asyncio.to_thread(self.audit.log.keep_witness, witness)
        await self._audit("audit.witnessed", message, checkpoint, None)

    def _countersignature_problem(
        self, witness: Witness, checkpoint: Checkpoint, partner: str
    ) -> str | None:
        if (witness.node, witness.to_seq, witness.checkpoint) != (
            checkpoint.node,
            checkpoint.to_seq,
            checkpoint.hash,
        ):
            return "it countersigns another checkpoint"
        if witness.witness != partner:
            return "it names another witness"
        point = self.partner_key(witness.key_id, partner, witness.time)
        if point is None or not auditchain.witness_signature_valid(witness, point, self.backend):
            return "its signature does not verify with the partner's key"
        return None

    def partner_key(self, key_id: str, region: str, moment: str) -> bytes | None:
        """A partner's signing key, if it is that partner's and was valid at ``moment``."""
        try:
            at = datetime.fromisoformat(moment.replace("Z", "+00:00"))
            return self.trust.sender_key(key_id, region, at).key.point
        except (SecurityError, ValueError):
            return None

    async def _audit(
        self, event: str, message: OutboxMessage, checkpoint: Checkpoint, code: str | None
    ) -> None:
        await self.audit.append(
            AuditEvent(
                event,
                "outbound",
                "ok" if code is None else "rejected",
                message_id=message.msg_id,
                partner=message.partner,
                error_code=code,
                details={"node": checkpoint.node, "to_seq": checkpoint.to_seq},
            )
        )

    # -- partners' checkpoints, witnessed by us -----------------------------------------------

    async def countersign(self, partner: str, document: Any) -> dict[str, Any]:
        """A partner asks us to witness one of its checkpoints: the answer body (accepted
        with our countersignature, or rejected with why). Its checkpoint must be signed by
        one of its keys we trust; one that contradicts a checkpoint of that node we witnessed
        before is refused, kept nowhere, and raised as an alert."""
        try:
            checkpoint = auditchain.checkpoint_from(document)
        except ValueError as exc:
            return _refusal("CHECKPOINT_MALFORMED", str(exc))
        point = self.partner_key(checkpoint.key_id, partner, checkpoint.time)
        if point is None or not auditchain.checkpoint_signature_valid(
            checkpoint, point, self.backend
        ):
            return _refusal(
                "CHECKPOINT_INVALID", "the checkpoint is not signed by a key of yours we trust"
            )
        details = {"node": checkpoint.node, "to_seq": checkpoint.to_seq}
        try:
            conflict = await asyncio.to_thread(self.audit.log.witness_for, partner, checkpoint)
        except LogDamaged as exc:  # no countersignature we cannot stand behind
            log.error("audit.witnessed_damaged", alert=True, partner=partner, detail=str(exc))
            return _refusal(
                "WITNESS_UNAVAILABLE",
                "we cannot check this checkpoint against those we countersigned before; "
                "ask again later",
            )
        if conflict is not None:
            self.metrics.witness_conflicts.labels(partner).inc()
            log.error("audit.partner_checkpoint_conflict", alert=True, partner=partner, **details)
            await self.audit.append(
                AuditEvent(
                    "audit.witness_conflict",
                    "inbound",
                    "rejected",
                    partner=partner,
                    error_code="CHECKPOINT_CONFLICT",
                    details={**details, "problem": conflict},
                )
            )
            return _refusal("CHECKPOINT_CONFLICT", conflict)
        signer = self.trust.signing_key(datetime.now(UTC))
        witness = auditchain.sign_witness(
            checkpoint,
            self.region,
            now_iso(),
            signer.scalar,
            signer.public.point,
            signer.key_id,
            self.backend,
        )
        await self.audit.append(
            AuditEvent("audit.witnessed_for", "inbound", "ok", partner=partner, details=details)
        )
        return {
            "status": "accepted",
            "receipt_no": f"{checkpoint.node}:{checkpoint.to_seq}",
            "result": witness.as_dict(),
        }


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {"status": "rejected", "code": code, "message": message[:1000]}
