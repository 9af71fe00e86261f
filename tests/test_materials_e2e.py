"""Materials end to end: a window uploads scans with a filing, the gateway keeps them sealed in
chunks, seals them for the partner as XGW-ENV/2 streams and the simulator opens and checks them;
bad uploads are refused with stable codes, audited, nothing half-stored. Real processes."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sqlite3
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mappings.examples import sample_filing
from tests.conftest import eventually
from tests.harness import Deployment, file_with, http

# SAMPLE files: the first bytes make their type; the rest is filler, several chunks long
PDF = b"%PDF-1.7\n% SAMPLE invoice\n" + os.urandom(300_000) + b"\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(70_000)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(
        tmp_path,
        extra_env={
            "XGW_MAX_MATERIAL_BYTES": str(1024 * 1024),
            "XGW_MATERIAL_RETENTION_DAYS": "0",
            "XGW_MATERIAL_PURGE_SECONDS": "0.5",
        },
    )
    try:
        yield deployed
    finally:
        deployed.close()


def stored_materials(deployment: Deployment) -> list[tuple[str, str, int]]:
    """(code, status, chunks stored) of every material the store holds."""
    with sqlite3.connect(deployment.data / "gateway.sqlite3") as db:
        return db.execute(
            "SELECT m.code, m.status, (SELECT COUNT(*) FROM material_chunk c "
            "WHERE c.material_id = m.id) FROM material m WHERE m.kind <> 'licence'"
        ).fetchall()


def test_scans_travel_sealed_to_the_partner_and_are_deleted_after_retention(
    deployment: Deployment,
) -> None:
    filing = {**sample_filing("YJS-YLBX"), "licences": []}  # the invoices as a scan
    status, case = file_with(
        deployment.url, deployment.token, filing, {"invoices": PDF, "discharge-summary": JPEG}
    )
    assert status == 201, case
    [done] = deployment.wait([case["id"]])
    assert {s["status"] for s in done["sub_matters"]} == {"done"}
    assert done["timeline"][0]["detail"]["materials"] == ["discharge-summary", "invoices"]
    given = {m["code"]: (m["type"], m["size"]) for m in case["materials"]}  # as filed
    assert given == {"invoices": ("pdf", len(PDF)), "discharge-summary": ("jpeg", len(JPEG))}

    # the partner opened both streams against the signed manifest and found what was declared
    stats = deployment.stats()["411329"]
    assert stats["materials"] == {"invoices": 1, "discharge-summary": 1}
    assert stats["material_bytes"] == len(PDF) + len(JPEG)
    assert not stats["rejected"]

    # the exchange log keeps the manifest (sizes and the sealed streams' SM3) for ever
    status, entries = http(
        "GET",
        f"{deployment.url}/api/v1/audit/entries?case_id={case['id']}&event=message.queued",
        token=deployment.xgw("tokens", "create", "--role", "auditor", "--name", "aud").strip(),
    )
    assert status == 200, entries
    manifests = [e["envelope"].get("materials") for e in entries["items"] if e.get("envelope")]
    [manifest] = [m for m in manifests if m]
    sizes = {part.split(":")[0]: int(part.split(":")[2]) for part in manifest.split(";")}
    assert sizes == {"invoices": len(PDF), "discharge-summary": len(JPEG)}

    # the case is done and the retention is 0 days: the files go, the log stays
    eventually(lambda: stored_materials(deployment) == [], "materials purged after retention")
    assert "materials.purged" in deployment.xgw("audit", "show", "--event", "materials.purged")


def test_every_problem_with_the_materials_at_once(deployment: Deployment) -> None:
    filing = {**sample_filing("YJS-YLBX"), "licences": []}
    # a ZIP (a bomb, as far as we know) named as a PDF scan; nothing for the invoices
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("invoice.pdf", b"\0" * 5_000_000)
    status, problem = file_with(
        deployment.url,
        deployment.token,
        filing,
        {"discharge-summary": bomb.getvalue(), "passport": PDF},
    )
    assert status == 422, problem
    assert problem["code"] == "MATERIALS_INVALID"
    found = {(e["location"], e["code"]) for e in problem["errors"]}
    assert found == {
        ("materials.invoices", "MATERIAL_MISSING"),
        ("materials.discharge-summary", "MATERIAL_TYPE"),
        ("materials.passport", "MATERIAL_UNKNOWN"),
    }
    assert stored_materials(deployment) == []  # nothing of a refused filing stays


def test_oversized_truncated_and_malformed_uploads_are_refused(deployment: Deployment) -> None:
    filing = {**sample_filing("YJS-YLBX"), "licences": []}
    status, problem = file_with(
        deployment.url,
        deployment.token,
        filing,
        {"invoices": PDF * 4},  # 1.2 MiB > 1 MiB
    )
    assert (status, problem["code"]) == (413, "MATERIAL_TOO_LARGE"), problem

    # a multipart body that ends before its last boundary
    boundary = "xgw-test-boundary"
    cut = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="case"\r\n'
            "Content-Type: application/json\r\n\r\n"
        ).encode()
        + orjson.dumps(filing)
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="invoices"; '
            'filename="a.pdf"\r\n\r\n'
        ).encode()
        + PDF[:100_000]
    )
    status, problem = http_raw(deployment, cut, f"multipart/form-data; boundary={boundary}")
    assert (status, problem["code"]) == (400, "MATERIAL_TRUNCATED"), problem

    # the window's connection breaks mid-upload: no answer can reach it, but the refusal is
    # on record and nothing of the upload stays
    before = deployment.xgw("audit", "show", "--event", "request.rejected").count(
        "MATERIAL_TRUNCATED"
    )
    send_broken(deployment, cut, f"multipart/form-data; boundary={boundary}")
    eventually(
        lambda: (
            deployment.xgw("audit", "show", "--event", "request.rejected").count(
                "MATERIAL_TRUNCATED"
            )
            > before
        ),
        "the broken upload audited",
    )

    # the filing must come first
    status, problem = http_raw(
        deployment,
        (f'--{boundary}\r\nContent-Disposition: form-data; name="invoices"\r\n\r\n').encode()
        + PDF[:100]
        + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )
    assert (status, problem["code"]) == (400, "MULTIPART_MALFORMED"), problem

    refused = deployment.xgw("audit", "show", "--event", "request.rejected", "--limit", "50")
    for code in ("MATERIAL_TOO_LARGE", "MATERIAL_TRUNCATED", "MULTIPART_MALFORMED"):
        assert code in refused
    assert stored_materials(deployment) == []


def test_an_e_licence_the_registry_does_not_hold_is_refused_by_the_partner(
    deployment: Deployment,
) -> None:
    from mappings.examples import sample_licence

    filing = sample_filing("YJS-YLBX")
    someone_else = "11010519491231002X"  # SAMPLE: a licence that is not the applicant's
    filing["licences"] = [
        {
            **filing["licences"][0],
            "identifier": sample_licence("1200000011", someone_else),
        }
    ]
    status, case = http(
        "POST",
        f"{deployment.url}/api/v1/cases",
        filing,
        deployment.token,
        {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 201, case
    [failed] = deployment.wait([case["id"]], ("attention",))
    codes = {s["id"]: s["error_code"] for s in failed["sub_matters"]}
    assert codes["reimbursement"] == "LICENCE_NOT_FOUND"
    assert deployment.stats()["411329"]["licences_checked"] >= 1


def _request_head(deployment: Deployment, content_type: str, length: int) -> bytes:
    host = deployment.url.removeprefix("http://")
    return (
        f"POST /api/v1/cases HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Authorization: Bearer {deployment.token}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def _connect(deployment: Deployment) -> socket.socket:
    host, port = deployment.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def http_raw(deployment: Deployment, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """A filing sent byte for byte, and the answer."""
    with _connect(deployment) as sock:
        sock.sendall(_request_head(deployment, content_type, len(body)) + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    payload = answer.split(b"\r\n\r\n", 1)[1]
    return status, orjson.loads(payload) if payload else {}


def send_broken(deployment: Deployment, body: bytes, content_type: str) -> None:
    """A filing whose Content-Length promises more than is sent before the connection closes,
    as a window's that broke would."""
    with _connect(deployment) as sock:
        sock.sendall(_request_head(deployment, content_type, len(body) + 1_000_000) + body)


def test_a_partners_materials_are_checked_kept_sealed_handed_to_our_office_and_deleted(
    deployment: Deployment,
) -> None:
    from security.stream import MaterialSealing
    from tests.partner_helpers import XIANGZHOU, Partner, contact_letter

    xinye = Partner(deployment.data)

    def sealed(ref: str, scan: bytes, msg_id: str | None = None) -> tuple[Any, bytes]:
        msg_id = msg_id or uuid.uuid4().hex
        wrapped = xinye.sealer.content_key(XIANGZHOU.region)
        sealing = MaterialSealing(wrapped.key, msg_id, "id-card", "pdf", xinye.sealer.backend)
        stream = sealing.add(scan)
        last, entry = sealing.finish()
        envelope = xinye.seal(
            contact_letter(), idem_key=ref, msg_id=msg_id, version=2, manifest=(entry,),
            wrapped=wrapped,
        )  # fmt: skip
        return envelope, stream + last

    def post(envelope: Any, stream: bytes) -> tuple[int, dict[str, Any]]:
        async def send() -> tuple[int, dict[str, Any]]:
            with aiohttp.MultipartWriter("form-data") as writer:
                part = writer.append(envelope.to_json(), {"Content-Type": "application/json"})
                part.set_content_disposition("form-data", name="envelope")
                part = writer.append(stream, {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name="id-card")
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{deployment.url}/partner/v1/cases", data=writer) as response,
            ):
                return response.status, await response.json(content_type=None)

        return asyncio.run(send())

    envelope, stream = sealed("XY-MAT-1", PDF)
    status, body = post(envelope, stream)
    assert status == 200, body
    receipt = xinye.open(env_from(body))
    assert receipt["status"] == "accepted"
    case_id = receipt["receipt_no"]
    # kept sealed at rest under our data key, never as the partner sent it
    with sqlite3.connect(deployment.data / "gateway.sqlite3") as db:
        chunks = db.execute(
            "SELECT c.data FROM material_chunk c JOIN material m ON m.id = c.material_id "
            "WHERE m.case_id = ?",
            (case_id,),
        ).fetchall()
    assert chunks and all(bytes(row[0]).startswith(b"XGWR") for row in chunks)
    assert PDF[:1000] not in b"".join(bytes(row[0]) for row in chunks)
    # our back office received it whole (its SM3 as listed), decided, the result went back
    eventually(lambda: "XY-MAT-1" in deployment.stats()["411329"]["results"], "result to 新野")
    assert deployment.stats()["local"]["materials"] == {case_id: 1}
    # the same message again: answered from our record, its materials not taken twice
    status, again = post(envelope, stream)
    assert status == 200 and xinye.open(env_from(again))["receipt_no"] == case_id
    # a stream damaged on the way: refused with its code, audited, nothing kept
    damaged_envelope, damaged = sealed("XY-MAT-2", PDF)
    status, problem = post(damaged_envelope, damaged[:-1] + bytes([damaged[-1] ^ 1]))
    assert (status, problem["code"]) == (400, "MATERIAL_BROKEN"), problem
    assert "MATERIAL_BROKEN" in deployment.xgw("audit", "show", "--event", "message.rejected")
    # a material over max_material_bytes (1 MiB here): refused from its manifest, unread
    large_envelope, large = sealed("XY-MAT-3", PDF * 4)
    status, problem = post(large_envelope, large)
    assert (status, problem["code"]) == (413, "MATERIAL_TOO_LARGE"), problem
    # the case finished and the retention (0 days) passed: its files go
    eventually(lambda: stored_materials(deployment) == [], "a partner's materials purged")


def env_from(body: dict[str, Any]) -> Any:
    from security import envelope as env

    return env.envelope_from_mapping(body)


def test_materials_travel_over_soap_as_mtom_attachments(tmp_path: Path) -> None:
    """新野 takes XGW-ENV/2 over SOAP too (the packaged partner-v2 WSDL): the 社保 sub-matters
    carry the 居民身份证 scan as an MTOM/XOP attachment, opened by the simulator."""
    deployment = Deployment(tmp_path, protocol="soap", soap_envelope=2)
    try:
        filing = {**sample_filing("YJS-SBZR"), "licences": []}
        status, case = file_with(deployment.url, deployment.token, filing, {"id-card": PDF})
        assert status == 201, case
        deployment.wait([case["id"]])
        stats = deployment.stats()["411329"]
        # the 联系函 and the 医保 transfer ask for it (the 公积金 one too, to its own partner)
        assert stats["materials"]["id-card"] >= 2, stats
        assert not stats["rejected"], stats
    finally:
        deployment.close()


def test_a_partner_files_materials_over_soap_as_mtom(deployment: Deployment) -> None:
    from adapters import soap11
    from adapters.partner_soap import mtom_body
    from security.stream import MaterialSealing
    from tests.partner_helpers import XIANGZHOU, Partner, contact_letter

    gateway_ns = "urn:xgw:gateway:1"
    xinye = Partner(deployment.data)
    msg_id = uuid.uuid4().hex
    wrapped = xinye.sealer.content_key(XIANGZHOU.region)
    sealing = MaterialSealing(wrapped.key, msg_id, "id-card", "pdf", xinye.sealer.backend)
    stream = sealing.add(PDF)
    last, entry = sealing.finish()
    envelope = xinye.seal(
        contact_letter(), idem_key="XY-MTOM-1", msg_id=msg_id, version=2, manifest=(entry,),
        wrapped=wrapped,
    )  # fmt: skip
    root, cids = soap11.request_with_materials(
        f"{{{gateway_ns}}}SubmitCaseRequest", f"{{{gateway_ns}}}Material", envelope
    )

    async def send() -> tuple[int, bytes]:
        async def attachment() -> AsyncIterator[bytes]:
            yield stream + last

        writer, content_type = mtom_body(root, [(cids[0], attachment())])
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{deployment.url}/soap/v1",
                data=writer,
                headers={"Content-Type": content_type, "SOAPAction": f'"{gateway_ns}/SubmitCase"'},
            ) as response,
        ):
            return response.status, await response.read()

    status, reply = asyncio.run(send())
    assert status == 200, reply
    receipt = xinye.open(soap11.carried_envelope(soap11.parse_document(reply)))
    assert receipt["status"] == "accepted"
    eventually(lambda: "XY-MTOM-1" in deployment.stats()["411329"]["results"], "result to 新野")
    assert deployment.stats()["local"]["materials"] == {receipt["receipt_no"]: 1}


def test_a_message_resealed_after_stale_carries_its_materials_sealed_anew(
    deployment: Deployment,
) -> None:
    """The partner refuses the first send as STALE: the message is sealed again under a new
    content key, its materials with it, and the partner opens those."""
    from mappings.examples import example

    form = {**example("medical_reimbursement"), "partner_region": "411329"}
    filing = {"matter": "XZ-YB-006", "applicant": sample_filing("YJS-YLBX")["applicant"]}
    deployment.faults({"411329": {"refuse_next": 1, "refuse_code": "STALE"}})
    status, case = file_with(
        deployment.url, deployment.token, {**filing, "form": form}, {"invoices": PDF}
    )
    assert status == 201, case
    [done] = deployment.wait([case["id"]])
    stats = deployment.stats()["411329"]
    assert stats["rejected"] == {"STALE": 1}  # the first seal, refused
    assert stats["materials"] == {"invoices": 1}  # the second, opened
    assert done["status"] == "done"
