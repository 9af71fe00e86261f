"""The partner simulator (``xgw simulate-partner``): a faithful stand-in for 新野县 and the
襄十随神 cities at the one boundary we do not own.

Each simulated jurisdiction has its own SM2 keys and trust store. It serves a SOAP 1.1 service
(its WSDL: ``adapters/wsdl/partner-v1.wsdl``) and a REST endpoint, verifies and opens our
envelopes exactly as the gateway opens partners' (signature, key validity, freshness, nonce),
de-duplicates by message id (a resend gets the first answer again, re-sealed, and applies no
effect; its records are on disk, so a restart forgets nothing), answers with sealed replies in its own schema (人社 dictionary codes; for a 信息表
request, a 信息表 with yearly rows), and counts the effects it applied.

Fault knobs (``POST /_sim/faults``, per region or ``*``): ``down`` (503), ``latency_ms``,
``error_rate`` (500), ``malformed_rate`` (garbage 200), ``reset_rate`` (connection dropped).
``reject_matters`` (a business refusal). XGW-ENV/2 over REST: the materials that follow the
envelope (multipart) are opened chunk by chunk against the signed manifest (a stream changed,
cut short or not the one named is refused with its ``MATERIAL_*`` code, before any effect), their
type checked by content, their digests kept in the ledger; the 电子证照 a request names stand
in only if the simulator's licence registry (the SAMPLE residents' licences,
``mappings.examples.sample_licence``) holds them for that holder. ``GET /_sim/stats`` shows the counts (effects applied,
requests ``in_flight`` now, requests ``turned_away`` by a fault knob); ``POST /_sim/reset`` clears them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from adapters import soap11
from adapters.partner_soap import PACKAGED_WSDL_V2 as WSDL
from adapters.partner_soap import PARTNER_NS
from gateway.config import Settings
from gateway.core.problems import GatewayError
from gateway.http.multipart import MaterialParts
from gateway.keystore import backend_for
from gateway.logs import get_logger
from mappings.examples import sample_licence
from mappings.materials import SNIFF_BYTES, licence_type_of, sniff
from security import auditchain
from security import envelope as env
from security.digest import Sm3Stream
from security.errors import ENVELOPE_MALFORMED, SecurityError
from security.keys import read_passphrase
from security.replay import MemoryNonceStore
from security.sealing import Opener, Sealer
from security.stream import MaterialBroken, MaterialOpening
from security.trust import TrustStore, load_trust_store

log = get_logger("gateway.devtools.simulator")
SIMULATED = {
    "411329": ("新野县", "xinye-gw"),
    "420300": ("十堰市", "shiyan-gw"),
    "421300": ("随州市", "suizhou-gw"),
    "429021": ("神农架林区", "shennongjia-gw"),
}


def simulator_dir(settings: Settings, region: str) -> Path:
    return settings.data_dir / "simulator" / region


@dataclass
class Faults:
    down: bool = False
    latency_ms: int = 0
    error_rate: float = 0.0
    malformed_rate: float = 0.0
    reset_rate: float = 0.0
    reject_matters: list[str] = field(default_factory=list)  # business refusal of these matters
    async_results: bool = False  # answer "pending", report the result later (ReportResult)
    lose_reports: bool = False  # ...but the report never leaves: 襄州 must ask (a query)
    never_decide: bool = False  # ...and no result ever comes: a query is answered "pending"
    # The next N answers are lost after their effect was applied (the connection drops): the
    # gateway must send again, and the partner must not apply it twice.
    lose_replies: int = 0
    # Check the nonce before the message-id cache, as some partners do: a resend of the very
    # same envelope is then refused as REPLAYED, and the gateway must re-seal it.
    replay_check_first: bool = False
    # Refuse the next N messages outright with this code (403 problem+json or a SOAP Fault),
    # as a partner does with one it will never take; nothing is applied.
    refuse_code: str = ""
    refuse_next: int = 0


class Ledger:
    """What a simulated partner answered and applied, on disk (SQLite in WAL mode): like a
    real partner's records, its de-duplication survives a restart of the process. A reply and
    the effect it stands for are written in one transaction. ``synchronous=NORMAL``: a commit
    is in the WAL file (the OS's buffers) when it returns, so a killed process loses none; an
    fsync per message would only slow the stand-in (it shares a core with the gateway in the
    benchmarks), and surviving a power cut is not what it is here to show."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (msg_id TEXT PRIMARY KEY, reply BLOB NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS effects (msg_id TEXT PRIMARY KEY, times INTEGER NOT NULL)"
        )
        # the gateway's checkpoints this partner countersigned (as a real witness keeps them)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS witnessed (node TEXT NOT NULL, from_seq INTEGER NOT NULL,"
            " to_seq INTEGER NOT NULL, checkpoint TEXT NOT NULL, prev TEXT NOT NULL,"
            " PRIMARY KEY (node, to_seq, checkpoint))"
        )

    def reply(self, msg_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT reply FROM replies WHERE msg_id = ?", (msg_id,)).fetchone()
        return dict(orjson.loads(row[0])) if row else None

    def record(self, msg_id: str, reply: dict[str, Any], applied: bool) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?)", (msg_id, orjson.dumps(reply))
            )
            if applied:
                self._db.execute(
                    "INSERT INTO effects VALUES (?, 1) "
                    "ON CONFLICT (msg_id) DO UPDATE SET times = times + 1",
                    (msg_id,),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def witnessed(self, node: str) -> list[auditchain.Witnessed]:
        rows = self._db.execute(
            "SELECT node, from_seq, to_seq, checkpoint, prev FROM witnessed WHERE node = ?",
            (node,),
        ).fetchall()
        return [auditchain.Witnessed(*row) for row in rows]

    def keep_witnessed(self, checkpoint: auditchain.Checkpoint) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO witnessed VALUES (?, ?, ?, ?, ?)",
            (
                checkpoint.node,
                checkpoint.from_seq,
                checkpoint.to_seq,
                checkpoint.hash,
                checkpoint.prev,
            ),
        )

    def effects(self) -> Counter[str]:
        return Counter(dict(self._db.execute("SELECT msg_id, times FROM effects").fetchall()))

    def clear(self) -> None:
        self._db.execute("DELETE FROM replies")
        self._db.execute("DELETE FROM effects")
        self._db.execute("DELETE FROM witnessed")


@dataclass
class Identity:
    region: str
    trust: TrustStore
    opener: Opener
    sealer: Sealer
    ledger: Ledger  # msg_id -> reply, and effects applied: on disk
    effects: Counter[str] = field(default_factory=Counter)  # msg_id -> effects applied
    duplicates: int = 0
    turned_away: int = 0  # requests answered by a fault knob instead of the service
    in_flight: int = 0  # requests being served now
    most_in_flight: int = 0  # the most at once: the gateway's concurrency limit, seen from here
    rejected: Counter[str] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)  # our case ref -> results received
    result_bodies: dict[str, Any] = field(default_factory=dict)
    witnessed: int = 0  # the gateway's checkpoints countersigned
    materials: Counter[str] = field(default_factory=Counter)  # materials opened, by code
    material_bytes: int = 0  # their plaintext, all told
    licences_checked: int = 0
    witness_refusals: Counter[str] = field(default_factory=Counter)  # by code


class Simulator:
    def __init__(self, settings: Settings, seed: int | None = None) -> None:
        backend = self.backend = backend_for(settings)
        self.identities: dict[str, Identity] = {}
        for region in SIMULATED:
            folder = simulator_dir(settings, region)
            trust_file = folder / "trust.yaml"
            if not trust_file.exists():
                continue
            trust = load_trust_store(
                trust_file, read_passphrase(file=folder / "passphrase"), backend
            )
            ledger = Ledger(folder / "ledger.sqlite3")
            self.identities[region] = Identity(
                region,
                trust,
                Opener(trust, backend, MemoryNonceStore(), settings.replay_window_seconds),
                Sealer(trust, backend),
                ledger,
                ledger.effects(),
            )
        self.faults: dict[str, Faults] = {}
        self.office_cases: Counter[str] = Counter()  # inbound case -> times our back office saw it
        self.office_materials: dict[str, int] = {}  # inbound case -> materials it received
        self.gateway_url = f"http://{settings.host}:{settings.port}"
        self._reports: set[asyncio.Task[None]] = set()
        self.reported: Counter[str] = Counter()  # our request id -> results reported to 襄州
        self.random = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def fault(self, region: str) -> Faults:
        return self.faults.get(region) or self.faults.get("*") or Faults()

    # -- what the partner does -------------------------------------------------------------

    def _effect(self, identity: Identity, envelope: env.Envelope, payload: Any) -> dict[str, Any]:
        if envelope.kind == "query":  # 襄州 asks for the result of one of its messages
            asked = payload.get("msg_id") if isinstance(payload, dict) else None
            final = identity.ledger.reply(f"final:{asked}") if isinstance(asked, str) else None
            if final is not None:
                return final
            if isinstance(asked, str) and identity.ledger.reply(asked) is not None:
                return {"status": "pending", "receipt_no": f"{identity.region}-{asked[:12]}"}
            return {"status": "rejected", "code": "MESSAGE_UNKNOWN", "message": "未收到该请求"}
        if envelope.kind == "witness":  # 襄州 asks us to countersign a checkpoint of its log
            return self._witness(identity, envelope, payload)
        if envelope.kind == "result":  # 襄州 reports the result of a case we filed there
            identity.results[envelope.idem_key] += 1
            identity.result_bodies[envelope.idem_key] = payload
            return {
                "status": "accepted",
                "receipt_no": f"{identity.region}-R-{envelope.msg_id[:12]}",
            }
        if envelope.matter in self.fault(identity.region).reject_matters:
            return {
                "status": "rejected",
                "code": "PARTNER_REJECTED",
                "message": "不予受理: the partner refused this matter (simulated)",
            }
        if not isinstance(payload, dict) or not any(
            k in payload for k in ("aac002", "certno", "zjhm", "gmsfhm", "sfzjh")
        ):
            return {
                "status": "rejected",
                "code": "PARTNER_VALIDATION",
                "message": "申请材料不完整: no 证件号码 in the request",
            }
        identity.effects[envelope.msg_id] += 1
        receipt = f"{identity.region}-{envelope.msg_id[:12]}"
        if payload.get("ywlx") == "XXB":
            return {
                "status": "accepted",
                "receipt_no": receipt,
                "result": _information_form(payload),
            }
        return {
            "status": "accepted",
            "receipt_no": receipt,
            "result": {"slbh": receipt, "blzt": "已受理"},
        }  # 受理编号, 办理状态

    def _witness(self, identity: Identity, envelope: env.Envelope, payload: Any) -> dict[str, Any]:
        """What a partner gateway does with a witness request (docs/exchange-log.md): check
        the checkpoint's signature, refuse one that contradicts a checkpoint of that node it
        witnessed before, else keep it and countersign its hash."""

        def refuse(code: str, message: str) -> dict[str, Any]:
            identity.witness_refusals[code] += 1
            return {"status": "rejected", "code": code, "message": message}

        try:
            checkpoint = auditchain.checkpoint_from(payload)
        except ValueError as exc:
            return refuse("CHECKPOINT_MALFORMED", str(exc))
        now = env.now_utc()
        try:
            key = identity.trust.sender_key(checkpoint.key_id, envelope.sender_region, now)
        except SecurityError:
            return refuse("CHECKPOINT_INVALID", "signed by no key of yours we trust")
        if not auditchain.checkpoint_signature_valid(checkpoint, key.key.point, self.backend):
            return refuse("CHECKPOINT_INVALID", "the checkpoint's signature does not verify")
        conflict = auditchain.witness_conflict(
            identity.ledger.witnessed(checkpoint.node), checkpoint
        )
        if conflict is not None:
            return refuse("CHECKPOINT_CONFLICT", conflict)
        identity.ledger.keep_witnessed(checkpoint)
        identity.witnessed += 1
        signer = identity.trust.signing_key(now)
        witness = auditchain.sign_witness(
            checkpoint,
            identity.region,
            now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            signer.scalar,
            signer.public.point,
            signer.key_id,
            self.backend,
        )
        return {
            "status": "accepted",
            "receipt_no": witness.checkpoint[:16],
            "result": witness.as_dict(),
        }

    async def handle(
        self,
        identity: Identity,
        envelope: env.Envelope,
        materials: MaterialParts | None = None,
    ) -> env.Envelope:
        """Verify, de-duplicate, open (the materials that follow too), apply once, answer
        sealed. Raises SecurityError, or MaterialBroken for a material that does not open."""
        now = env.now_utc()
        sender = identity.opener.authenticate(envelope, now)
        faults = self.fault(identity.region)
        if faults.refuse_next > 0 and faults.refuse_code:
            faults.refuse_next -= 1
            raise SecurityError(faults.refuse_code, "refused (simulated)")
        opened = None
        if faults.replay_check_first:
            opened = await identity.opener.unseal(envelope, sender)  # REPLAYED: a nonce seen
        reply = identity.ledger.reply(envelope.msg_id)
        if reply is not None:
            identity.duplicates += 1
        else:
            applied_before = identity.effects[envelope.msg_id]
            if opened is None:
                opened = await identity.opener.unseal(envelope, sender)
            kinds = await self._materials(identity, envelope, opened.content_key, materials)
            try:
                payload = orjson.loads(opened.plaintext)
            except orjson.JSONDecodeError:
                payload = None
            reply = self._checked(identity, envelope, payload, kinds) or self._effect(
                identity, envelope, payload
            )
            if faults.async_results and envelope.kind == "request":
                final, reply = reply, {"status": "pending", "receipt_no": reply.get("receipt_no")}
                if not faults.never_decide:
                    identity.ledger.record(f"final:{envelope.msg_id}", final, applied=False)
                if not (faults.lose_reports or faults.never_decide):
                    task = asyncio.create_task(self._report_later(identity, envelope, final))
                    self._reports.add(task)
                    task.add_done_callback(self._reports.discard)
            applied = identity.effects[envelope.msg_id] > applied_before
            identity.ledger.record(envelope.msg_id, reply, applied)
        # Re-sealed every time: a resend gets a fresh nonce, so it is no replay to the gateway.
        return identity.sealer.seal(
            orjson.dumps(reply),
            receiver=envelope.sender,
            kind="receipt",
            matter=envelope.matter,
            idem_key=envelope.msg_id,
        )

    async def _materials(
        self,
        identity: Identity,
        envelope: env.Envelope,
        content_key: bytes,
        reader: MaterialParts | None,
    ) -> dict[str, str | None]:
        """Opens each material the manifest names, as it arrives, in order; the type each
        turned out to be (by content). What is opened is not kept: a real partner would store
        it (encrypted) for its back office."""
        kinds: dict[str, str | None] = {}
        for entry in envelope.manifest:
            found = await reader.next_part() if reader is not None else None
            if found is None or found[0] != entry.code:
                raise MaterialBroken("MATERIAL_TRUNCATED", f"{entry.code} did not follow")
            opening = MaterialOpening(content_key, envelope.msg_id, entry, self.backend)
            head = b""
            async for chunk in found[1]:
                plain = opening.add(chunk)
                if len(head) < SNIFF_BYTES:
                    head += plain[: SNIFF_BYTES - len(head)]
            plain = opening.finish()
            head = (head + plain)[:SNIFF_BYTES]
            kinds[entry.code] = sniff(head)
            identity.materials[entry.code] += 1
            identity.material_bytes += entry.size
        if reader is not None and await reader.next_part() is not None:
            raise MaterialBroken("MATERIAL_UNEXPECTED", "a part the manifest does not name")
        return kinds

    def _checked(
        self,
        identity: Identity,
        envelope: env.Envelope,
        payload: Any,
        kinds: dict[str, str | None],
    ) -> dict[str, Any] | None:
        """A refusal for materials that are not what the manifest says, or 电子证照 the
        licence registry does not hold; None when all is well."""
        for entry in envelope.manifest:
            if kinds.get(entry.code) != entry.kind:
                return {
                    "status": "rejected",
                    "code": "MATERIAL_TYPE",
                    "message": f"材料 {entry.code} 的内容不是所声明的 {entry.kind.upper()} 文件",
                }
        licences = payload.get("xgw_licences") if isinstance(payload, dict) else None
        for licence in licences if isinstance(licences, list) else []:
            identity.licences_checked += 1
            identifier = licence.get("identifier") if isinstance(licence, dict) else None
            holder = licence.get("holder") if isinstance(licence, dict) else None
            kind = licence_type_of(identifier) if isinstance(identifier, str) else None
            if (
                kind is None
                or not isinstance(holder, str)
                or sample_licence(kind, holder) != identifier
            ):
                return {
                    "status": "rejected",
                    "code": "LICENCE_NOT_FOUND",
                    "message": "电子证照库中查无此证，或持证主体不符",
                }
        return None

    async def _report_later(
        self, identity: Identity, request: env.Envelope, final: dict[str, Any]
    ) -> None:
        """Report the result of an earlier request to the gateway (ReportResult over REST)."""
        import aiohttp

        await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as session:
            for attempt in range(6):
                sealed = identity.sealer.seal(
                    orjson.dumps(final),
                    receiver=request.sender,
                    kind="result",
                    matter=request.matter,
                    idem_key=request.msg_id,
                    msg_id=f"R{request.msg_id[:31]}",
                )
                try:
                    async with session.post(
                        f"{self.gateway_url}/partner/v1/results",
                        data=sealed.to_json(),
                        headers={"Content-Type": "application/json"},
                    ) as response:
                        if response.status == 200:
                            self.reported[request.msg_id] += 1
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1 * 2**attempt)

    # -- HTTP --------------------------------------------------------------------------------

    async def _faulty(self, request: web.Request, region: str) -> web.StreamResponse | None:
        faults = self.fault(region)
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        answer = self._fault_answer(request, faults)
        identity = self.identities.get(region)
        if answer is not None and identity is not None:
            identity.turned_away += 1
        return answer

    def _fault_answer(self, request: web.Request, faults: Faults) -> web.StreamResponse | None:
        if faults.down:
            return web.Response(status=503, text="partner down (simulated)")
        if faults.reset_rate and self.random.random() < faults.reset_rate:
            if request.transport is not None:
                request.transport.abort()  # the client sees the connection reset
            return web.Response(status=500)
        if faults.error_rate and self.random.random() < faults.error_rate:
            return web.Response(status=500, text="internal error (simulated)")
        if faults.malformed_rate and self.random.random() < faults.malformed_rate:
            return web.Response(status=200, body=b"<<<not a reply>>>", content_type="text/xml")
        return None

    def _reply_lost(self, request: web.Request, region: str) -> bool:
        """``lose_replies``: drop the connection instead of answering (the effect stays)."""
        faults = self.fault(region)
        if faults.lose_replies <= 0:
            return False
        faults.lose_replies -= 1
        if request.transport is not None:
            request.transport.abort()
        return True

    def _identity(self, request: web.Request) -> Identity:
        identity = self.identities.get(request.match_info["region"])
        if identity is None:
            raise web.HTTPNotFound()
        return identity

    @contextlib.contextmanager
    def _serving(self, identity: Identity) -> Iterator[None]:
        identity.in_flight += 1
        identity.most_in_flight = max(identity.most_in_flight, identity.in_flight)
        try:
            yield
        finally:
            identity.in_flight -= 1

    async def rest(self, request: web.Request) -> web.StreamResponse:
        identity = self._identity(request)
        with self._serving(identity):
            return await self._rest(request, identity)

    async def _rest(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        # The whole request first, as a real service takes it in before working on it: a
        # caller that then gives up (a timeout) does not stop the work it asked for. With
        # materials (multipart), the envelope first; the materials are read as they are opened.
        parts = None
        if request.content_type == "multipart/form-data":
            parts = MaterialParts(await request.multipart())
            raw = await _first_or_nothing(parts, "envelope")
        else:
            raw = await request.read()
        faulty = await self._faulty(request, identity.region)
        if faulty is not None:
            return faulty
        try:
            envelope = env.envelope_from_json(raw)
            reply = await self.handle(identity, envelope, parts)
        except (SecurityError, MaterialBroken) as exc:
            identity.rejected[exc.code] += 1
            return web.Response(
                status=403
                if isinstance(exc, SecurityError) and exc.code != ENVELOPE_MALFORMED
                else 400,
                body=orjson.dumps({"code": exc.code, "title": exc.message}),
                content_type="application/problem+json",
            )
        if self._reply_lost(request, identity.region):
            return web.Response(status=500)
        return web.Response(body=reply.to_json(), content_type="application/json")

    async def soap(self, request: web.Request) -> web.StreamResponse:
        identity = self._identity(request)
        if "wsdl" in request.query:
            text = WSDL.read_text(encoding="utf-8").replace(
                "http://127.0.0.1:8090/411329/soap", str(request.url.with_query(None))
            )
            return web.Response(text=text, content_type="text/xml")
        with self._serving(identity):
            return await self._soap(request, identity)

    async def _soap(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        # first, as in _rest; with materials (MTOM/XOP: multipart/related), the XML part first
        content_type, parts = request.headers.get("Content-Type", ""), None
        if soap11.media_type(content_type) == "multipart/related":
            parts = MaterialParts(await request.multipart(), xop=True)
            raw = await _first_or_nothing(parts)
            content_type = "text/xml"
        else:
            raw = await request.read()
        faulty = await self._faulty(request, identity.region)
        if faulty is not None:
            return faulty
        try:
            _op, element = soap11.parse_request(
                raw,
                content_type,
                request.headers.get("SOAPAction"),
                {"Submit": f"{{{PARTNER_NS}}}SubmitRequest"},
            )
            envelope, included = soap11.carried_with_materials(element, f"{{{PARTNER_NS}}}Material")
            if parts is not None:
                parts.name_by_content_id(included)
            reply = await self.handle(identity, envelope, parts)
        except soap11.SoapError as exc:
            identity.rejected[exc.code] += 1
            return web.Response(
                status=500, body=soap11.fault_xml(exc, PARTNER_NS), content_type="text/xml"
            )
        except (SecurityError, MaterialBroken) as exc:
            identity.rejected[exc.code] += 1
            return web.Response(
                status=500,
                body=soap11.fault_for(exc.code, exc.message, PARTNER_NS),
                content_type="text/xml",
            )
        if self._reply_lost(request, identity.region):
            return web.Response(status=500)
        body = soap11.envelope_response(f"{{{PARTNER_NS}}}SubmitResponse", reply)
        return web.Response(body=body, content_type="text/xml")

    async def stats(self, _request: web.Request) -> web.Response:
        partners = {
            region: {
                "applied": sum(i.effects.values()),
                "messages": len(i.effects),
                "applied_twice": sorted(m for m, n in i.effects.items() if n > 1),
                "duplicates_answered": i.duplicates,
                "most_in_flight": i.most_in_flight,
                "in_flight": i.in_flight,
                "turned_away": i.turned_away,
                "rejected": dict(i.rejected),
                "results": dict(i.results),
                "result_bodies": i.result_bodies,
                "witnessed": i.witnessed,
                "witness_refusals": dict(i.witness_refusals),
                "materials": dict(i.materials),
                "material_bytes": i.material_bytes,
                "licences_checked": i.licences_checked,
            }
            for region, i in self.identities.items()
        }
        local = {
            "cases": len(self.office_cases),
            "seen_twice": sorted(c for c, n in self.office_cases.items() if n > 1),
            "materials": self.office_materials,
        }
        return web.json_response({"local": local, **partners})

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        for region, knobs in body.items():
            self.faults[str(region)] = Faults(**knobs)
        return web.json_response({"ok": True})

    async def reset(self, _request: web.Request) -> web.Response:
        self.faults.clear()
        for identity in self.identities.values():
            identity.effects.clear()
            identity.ledger.clear()
            identity.duplicates = 0
            identity.most_in_flight = 0
            identity.turned_away = 0
            identity.rejected.clear()
            identity.results.clear()
            identity.result_bodies.clear()
            identity.materials.clear()
            identity.material_bytes = identity.licences_checked = 0
        self.office_cases.clear()
        self.office_materials.clear()
        return web.json_response({"ok": True})

    async def local_office(self, request: web.Request) -> web.StreamResponse:
        """Stands in for a 襄州 department system: decides an inbound case (same fault knobs,
        region "local")."""
        faulty = await self._faulty(request, "local")
        if faulty is not None:
            return faulty
        received: dict[str, str] = {}  # code -> SM3 of what arrived
        if request.content_type == "multipart/form-data":  # the case, then its materials
            parts = MaterialParts(await request.multipart())
            body = orjson.loads(await parts.first(env.MAX_ENVELOPE_BYTES, "case"))
            while (found := await parts.next_part()) is not None:
                digest = Sm3Stream()
                async for chunk in found[1]:
                    digest.update(chunk)
                received[found[0]] = digest.hexdigest()
        else:
            body = await request.json()
        case_id = str(body.get("case_id"))
        self.office_cases[case_id] += 1
        form = body.get("form") or {}
        if not isinstance(form, dict) or not form:
            return web.json_response({"status": "rejected", "message": "empty form"})
        listed = {m["code"]: m["sm3"] for m in body.get("materials") or []}
        if received != listed:  # each material as listed, whole
            return web.json_response(
                {"status": "rejected", "message": "材料与清单不符"}, status=400
            )
        self.office_materials[case_id] = len(received)
        return web.json_response(
            {
                "status": "done",
                "result": {
                    "decision": "approved",
                    "ticket": f"XZ-{request.match_info['domain']}-{case_id[-8:]}",
                    "decided_by": "襄州区 (local simulator)",
                    "materials_received": len(received),
                },
            }
        )


async def _first_or_nothing(parts: MaterialParts, name: str | None = None) -> bytes:
    """A message's first part; nothing (an envelope that does not parse) if it is not there."""
    try:
        return await parts.first(env.MAX_ENVELOPE_BYTES, name)
    except (MaterialBroken, GatewayError):
        return b""


def _information_form(request: dict[str, Any]) -> dict[str, Any]:
    """A 参保缴费信息表 in 人社 codes: 20 yearly rows, amounts in 分 (SAMPLE figures)."""
    rows = []
    for index, year in enumerate(range(2006, 2026)):
        base = 200000 + index * 15000
        rows.append(
            {
                "aae001": year,
                "aae041": f"{year}01",
                "aae042": f"{year}12",
                "aae180": base,
                "aae202": 12,
                "aae022": base * 12 * 8 // 100,
                "aae020": base * 12 * 16 // 100,
            }
        )
    return {
        "aac002": request.get("aac002"),
        "aac003": request.get("aac003"),
        "aae270": request.get("aae270"),
        "aae140": request.get("aae140", "110"),
        "aac049": "200601",
        "aae201": 240,
        "aic083": 4567890,
        "aic084": 9135780,
        "aae036": "20261125",
        "ac20": rows,
    }


def build_simulator_app(settings: Settings, seed: int | None = None) -> web.Application:
    simulator = Simulator(settings, seed)
    app = web.Application(client_max_size=settings.max_body_bytes)
    app["simulator"] = simulator
    app.router.add_post("/{region}/rest/messages", simulator.rest)
    app.router.add_route("*", "/{region}/soap", simulator.soap)
    app.router.add_post("/local/{domain}/matters", simulator.local_office)
    app.router.add_get("/_sim/stats", simulator.stats)
    app.router.add_post("/_sim/faults", simulator.set_faults)
    app.router.add_post("/_sim/reset", simulator.reset)
    log.info("simulator.ready", partners=sorted(simulator.identities))
    return app
