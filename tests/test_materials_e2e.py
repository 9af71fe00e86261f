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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from mappings.examples import sample_filing
from tests.conftest import eventually
from tests.harness import Deployment, http

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


def file_with(
    url: str, token: str, filing: dict[str, Any], files: dict[str, bytes], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST a filing as multipart/form-data: the case part first, then one part per file."""

    async def post() -> tuple[int, dict[str, Any]]:
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(orjson.dumps(filing), {"Content-Type": "application/json"})
            part.set_content_disposition("form-data", name="case")
            for code, data in files.items():
                part = writer.append(data, {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name=code, filename=f"{code}.bin")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/api/v1/cases",
                data=writer,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": key or uuid.uuid4().hex,
                },
            ) as response,
        ):
            return response.status, await response.json(content_type=None)

    return asyncio.run(post())


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
