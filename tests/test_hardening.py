"""What a campaign of hostile and buggy clients found, each as a test against a real gateway
(one deployment for the module: these requests change no shared state they rely on)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappings import identifiers
from rules.text import is_code, text_problem
from security import envelope as env
from security.errors import SecurityError
from tests.conftest import eventually
from tests.harness import Deployment, http
from tests.partner_helpers import Partner

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path_factory.mktemp("hardening"))
    try:
        yield deployed
    finally:
        deployed.close()


def _our_message(deployment: Deployment) -> tuple[str, str]:
    """(case id, the id of one of our messages 新野 answered): a finished case."""
    case = deployment.file("YJS-YLBX")
    deployment.wait([case["id"]])
    timeline = deployment.case(case["id"])["timeline"]
    ours = next(s["detail"]["message_id"] for s in timeline if s["step"] == "queued")
    return case["id"], ours


def _report(deployment: Deployment, body: Any, ours: str) -> tuple[int, Any]:
    sealed = Partner(deployment.data).seal(body, kind="result", idem_key=ours)
    return http("POST", f"{deployment.url}/partner/v1/results", raw=sealed.to_json())


def test_a_partners_odd_result_report_is_refused_and_the_case_still_renders(
    deployment: Deployment,
) -> None:
    case_id, ours = _our_message(deployment)
    before = deployment.case(case_id)
    odd_bodies = [
        {"status": "accepted", "code": {"an": "object"}, "message": ["a", "list"]},
        {"status": "rejected", "code": "X", "message": "y" * 5000},
        {"status": "accepted", "result": {"blob": "<b>" + "x" * (2 * 1024 * 1024) + "</b>"}},
        {"status": "accepted", "result": {"name": "Zhang\u202eSan"}},
        {"status": 1},
        ["not", "an", "object"],
    ]
    for body in odd_bodies:
        status, problem = _report(deployment, body, ours)
        assert (status, problem["code"]) == (400, "RESULT_MALFORMED"), (body, problem)
        assert "request_id" in problem or "title" in problem
    after = deployment.case(case_id)  # renders, and as small as it was
    assert after["status"] == before["status"] == "done"
    assert len(json.dumps(after)) < len(json.dumps(before)) + 1000
    status, listing = http("GET", f"{deployment.url}/api/v1/cases?limit=50", token=deployment.token)
    assert status == 200 and case_id in [c["id"] for c in listing["items"]]
    refused = deployment.xgw("audit", "show", "--event", "message.rejected", "--limit", "1000")
    assert refused.count("RESULT_MALFORMED") >= len(odd_bodies)


def test_a_sound_report_on_a_finished_message_is_noted_by_its_digest(
    deployment: Deployment,
) -> None:
    case_id, ours = _our_message(deployment)
    body = {"status": "accepted", "result": {"note": "已办结 " + "备注" * 20_000}}
    status, answer = _report(deployment, body, ours)
    assert status == 200, answer
    noted = [
        s for s in deployment.case(case_id)["timeline"] if s["step"] == "partner_reported_result"
    ]
    assert len(noted) == 1 and set(noted[0]["detail"]) == {"partner", "status", "code", "digest"}


def test_identifiers_are_ascii_and_whole() -> None:
    valid = "11010519491231002X"
    assert identifiers.check_resident_id(valid) == valid
    for bad in (valid.translate(FULL_WIDTH), valid + "\n", "\u202e" + valid):
        with pytest.raises(identifiers.IdentifierError):
            identifiers.check_resident_id(bad)
    assert identifiers.region_name("４１１３２９") is None
    assert not is_code(r"[0-9]{6}", "411329\n") and not is_code(r"\d{6}", "４１１３２９")


@given(st.text(min_size=1, max_size=20), st.sampled_from(["\x00", "\r", "\n", "\u202e", "\u2066"]))
def test_text_refuses_controls_and_bidi_overrides(text: str, bad: str) -> None:
    assert text_problem(text[: len(text) // 2] + bad + text[len(text) // 2 :]) is not None


def test_envelope_fields_refuse_line_feeds_full_width_digits_and_repeats(
    deployment: Deployment,
) -> None:
    sealed = Partner(deployment.data).seal({"x": 1}, kind="query", idem_key="q-hardening")
    fields = sealed.as_dict()
    for name, value in (
        ("msg_id", fields["msg_id"] + "\n"),
        ("idem_key", fields["idem_key"] + "\n"),
        ("sender_region", fields["sender_region"].translate(FULL_WIDTH)),
    ):
        with pytest.raises(SecurityError) as refused:
            env.envelope_from_mapping({**fields, name: value})
        assert refused.value.code == "ENVELOPE_MALFORMED"
    text = sealed.to_json().decode()
    repeated = text.replace('"kind":', '"kind": "request", "kind":', 1)
    with pytest.raises(SecurityError) as refused:
        env.envelope_from_json(repeated.encode())
    assert refused.value.code == "ENVELOPE_MALFORMED" and "kind" in refused.value.message
    status, problem = http("POST", f"{deployment.url}/partner/v1/status", raw=repeated.encode())
    assert (status, problem["code"]) == (400, "ENVELOPE_MALFORMED")


def _filing(**applicant: str) -> dict[str, Any]:
    from mappings.examples import sample_filing

    filing = sample_filing("YJS-YLBX")
    return {**filing, "applicant": {**filing["applicant"], **applicant}}


def test_a_window_cannot_file_full_width_ids_or_control_characters(
    deployment: Deployment,
) -> None:
    url = f"{deployment.url}/api/v1/cases"
    good = _filing()
    id_number = good["applicant"]["id_number"]
    bodies = [
        _filing(id_number=id_number.translate(FULL_WIDTH)),
        _filing(name="张\u202e三"),
        _filing(name="张\x00三"),
        _filing(name="张三\r\nX-Forged: 1"),
        {**good, "clerk": "clerk\u202e"},
        {**good, "form": {**good["form"], "note": "a\x00b"}},
    ]
    for n, body in enumerate(bodies):
        status, problem = http(
            "POST", url, body, deployment.token, {"Idempotency-Key": f"hardening-id-{n}"}
        )
        assert (status, problem["code"]) == (422, "VALIDATION_FAILED"), (n, problem)


@pytest.mark.parametrize(
    "query",
    [
        "from=0001-01-01T00:00:00%2B01:00",
        "to=0001-01-01T00:00:00%2B01:00",
        "from=9999-12-31T23:59:59-01:00",
        "cursor=" + "WyIyMDI2LTEyLTAxVDAwOjAwOjAwWiIsIDkyMjMzNzIwMzY4NTQ3NzU4MDhd",
    ],
)
def test_extreme_query_values_are_400_not_500(deployment: Deployment, query: str) -> None:
    status, problem = http("GET", f"{deployment.url}/api/v1/cases?{query}", token=deployment.token)
    assert (status, problem["code"]) == (400, "QUERY_INVALID"), problem


def test_extreme_audit_cursors_and_odd_case_ids(deployment: Deployment) -> None:
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "aud-h").strip()
    import base64

    for after in (["2026-12-01T00:00:00Z", "n", 2**63], ["t", "n", -(2**64)]):
        cursor = base64.urlsafe_b64encode(json.dumps(after).encode()).decode()
        status, problem = http(
            "GET", f"{deployment.url}/api/v1/audit/entries?cursor={cursor}", token=auditor
        )
        assert (status, problem["code"]) == (400, "QUERY_INVALID"), (after, problem)
    case_id = deployment.file("YJS-HKQY")["id"]
    for odd in ("%ED%A0%80", "a%00b", "x" * 300):
        for action in ("retry", "complete"):
            status, problem = http(
                "POST",
                f"{deployment.url}/api/v1/cases/{case_id}/sub-matters/{odd}/{action}",
                {},
                deployment.token,
            )
            assert (status, problem["code"]) == (404, "NOT_FOUND"), (odd, problem)
        status, problem = http(
            "GET", f"{deployment.url}/api/v1/cases/{odd}", token=deployment.token
        )
        assert (status, problem["code"]) == (404, "NOT_FOUND"), (odd, problem)
        status, problem = http(
            "GET", f"{deployment.url}/api/v1/audit/cases/{odd}/evidence", token=auditor
        )
        assert (status, problem["code"]) == (404, "NOT_FOUND"), (odd, problem)


def _forged(deployment: Deployment, size: int) -> bytes:
    """A well-formed envelope whose ciphertext nobody signed: anyone can send it."""
    import base64
    import os

    sealed = Partner(deployment.data).seal({"x": 1}, kind="query", idem_key="q-forged")
    forged = {**sealed.as_dict(), "ciphertext": base64.b64encode(os.urandom(size)).decode()}
    return json.dumps(forged).encode()


def _rejected_bytes(deployment: Deployment) -> int:
    import sqlite3

    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:
        row = db.execute(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM audit_entry WHERE event = 'message.rejected'"
        ).fetchone()
    return int(row[0])


def test_forged_envelopes_leave_a_fingerprint_not_their_body(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path, extra_env={"XGW_INBOUND_REFUSALS_PER_MINUTE": "4"})
    try:
        before = _rejected_bytes(deployment)
        # the count is per clock minute: all six in one
        eventually(lambda: time.time() % 60 < 50, "a minute with time to spare", timeout=15)
        answers = [
            http("POST", f"{deployment.url}/partner/v1/status", raw=_forged(deployment, 2 << 20))
            for _ in range(6)
        ]
        assert [status for status, _ in answers] == [401] * 4 + [429] * 2
        assert answers[0][1]["code"] == "SIGNATURE_INVALID" and answers[0][1]["request_id"]
        assert answers[-1][1]["code"] == "RATE_LIMITED"
        assert _rejected_bytes(deployment) - before < 4 * 2000  # not 4 × 2.7 MB
        shown = deployment.xgw("audit", "show", "--event", "message.rejected", "--limit", "10")
        assert shown.count("SIGNATURE_INVALID") == 4
        throttled = deployment.xgw("audit", "show", "--event", "source.throttled")
        assert throttled.count("source.throttled") == 1  # once a minute, not once a request
    finally:
        deployment.close()


SOAP_DOC = (
    '<?xml version="1.0" encoding="{encoding}"?>{dtd}'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">{header}'
    "<soap:Body>{body}</soap:Body>{extra}</soap:Envelope>"
)


def _soap_doc(**parts: str) -> str:
    values = {"encoding": "UTF-8", "dtd": "", "header": "", "body": "<x/>", "extra": ""}
    return SOAP_DOC.format(**{**values, **parts})


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (
            _soap_doc(
                encoding="UTF-16",
                dtd='<!DOCTYPE e SYSTEM "http://127.0.0.1:1/x.dtd" [<!ENTITY % p SYSTEM "x">%p;]>',
            ).encode("utf-16"),
            "XML_ENCODING_UNSUPPORTED",
        ),
        (_soap_doc(encoding="UTF-32").encode("utf-32"), "XML_ENCODING_UNSUPPORTED"),
        (_soap_doc(encoding="UTF-16").encode("utf-16-le"), "XML_ENCODING_UNSUPPORTED"),
        (_soap_doc(dtd='<!DOCTYPE e [<!ENTITY a "b">]>').encode(), "XML_DTD_FORBIDDEN"),
        (_soap_doc(body="<a>" * 10_000 + "</a>" * 10_000).encode(), "XML_TOO_DEEP"),
        (_soap_doc(body="<a>" * 40 + "</a>" * 40).encode(), "XML_TOO_DEEP"),
        (_soap_doc(extra="<soap:Body><y/></soap:Body>").encode(), "SOAP_MALFORMED"),
        (
            _soap_doc(
                header='<soap:Header><s:Security xmlns:s="urn:s" soap:mustUnderstand="1"/>'
                "</soap:Header>"
            ).encode(),
            "SOAP_MUST_UNDERSTAND",
        ),
    ],
    ids=["utf16-dtd", "utf32", "utf16-no-bom", "dtd", "deep-10000", "deep-40", "two-bodies", "mu"],
)
def test_soap_documents_are_refused_for_what_they_are(document: bytes, code: str) -> None:
    from adapters import soap11

    with pytest.raises(soap11.SoapError) as refused:
        soap11.parse_document(document)
    assert refused.value.code == code


def test_soap_faults_over_http_say_what_and_how(deployment: Deployment) -> None:
    from tests.harness import http_exchange

    header = '<soap:Header><s:Security xmlns:s="urn:s" soap:mustUnderstand="1"/></soap:Header>'
    status, headers, body = http_exchange(
        "POST",
        f"{deployment.url}/soap/v1",
        raw=_soap_doc(header=header).encode(),
        headers={"Content-Type": "text/xml; charset=utf-8"},
    )
    assert status == 500 and b"soap:MustUnderstand" in body and b"SOAP_MUST_UNDERSTAND" in body
    assert headers["Content-Type"] == "text/xml; charset=utf-8"
    status, headers, wsdl = http_exchange(
        "GET", f"{deployment.url}/soap/v1?WSDL", headers={"X-Forwarded-Proto": "https"}
    )
    assert status == 200 and b'location="https://127.0.0.1:' in wsdl


def _partner_makes_vectors(deployment: Deployment, out: Path, *extra: str) -> dict[str, Any]:
    """``xgw vectors make`` as 新野 runs it: its own key, our public key; the manifest."""
    from tests.conftest import run_xgw, xgw_env

    folder = deployment.data / "simulator" / "411329"
    ours = next((deployment.data / "keys").glob("own-*.pub.pem"))
    made = run_xgw(
        "vectors", "make", "--key", str(folder / "partner.key.pem"),
        "--passphrase-file", str(folder / "passphrase"), "--to", str(ours),
        "--sender-region", "411329", "--sender-node", "xinye-gw", "--matter", "XY-SB-001",
        "--out", str(out), *extra,
        env=xgw_env(deployment.data),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return manifest


def test_fresh_vectors_from_xgw_vectors_make_meet_a_live_receiver(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A partner makes vectors with its own key and our public key; sent to the running
    gateway within the window, ok.json is taken in and every other one refused with the code
    the manifest gives (the live gateway answers a resend with its first receipt instead of
    REPLAYED: that expectation is the opener's, §9)."""
    out = tmp_path / "vectors"
    manifest = _partner_makes_vectors(deployment, out)
    for vector in manifest["vectors"]:
        raw = (out / vector["file"]).read_bytes()
        status, body = http("POST", f"{deployment.url}/partner/v1/cases", raw=raw)
        if vector["expect"] == "OK":
            assert status == 200, body
        else:
            assert body["code"] == vector["expect"], (vector["file"], body)


def test_fresh_env2_vectors_meet_a_live_receiver_material_by_material(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The same for XGW-ENV/2: each vector a message of its own, its envelope then its sealed
    materials over REST multipart; the intact one is taken in, each damaged stream refused
    with its MATERIAL_* code."""
    import asyncio

    import aiohttp

    out = tmp_path / "vectors2"
    manifest = _partner_makes_vectors(deployment, out, "--envelope", "2")
    assert [v["expect"] for v in manifest["vectors"]] == [
        "OK", "MATERIAL_BROKEN", "MATERIAL_BROKEN", "MATERIAL_TRUNCATED", "MATERIAL_DIGEST",
    ]  # fmt: skip
    assert len({v["envelope"] for v in manifest["vectors"]}) == 5  # five messages

    async def send(vector: dict[str, str]) -> tuple[int, dict[str, Any]]:
        envelope = (out / vector["envelope"]).read_bytes()
        with aiohttp.MultipartWriter("form-data") as writer:
            part = writer.append(envelope, {"Content-Type": "application/json"})
            part.set_content_disposition("form-data", name="envelope")
            for code in manifest["materials"]:
                stream = (out / f"{vector['streams']}.{code}.sealed").read_bytes()
                part = writer.append(stream, {"Content-Type": "application/octet-stream"})
                part.set_content_disposition("form-data", name=code)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{deployment.url}/partner/v1/cases", data=writer) as response,
        ):
            return response.status, await response.json(content_type=None)

    for vector in manifest["vectors"]:
        status, body = asyncio.run(send(vector))
        if vector["expect"] == "OK":
            assert status == 200, body
            receipt = Partner(deployment.data).open(env.envelope_from_mapping(body))
            assert receipt["status"] == "accepted", receipt  # materials and all taken in
        else:
            assert (status, body["code"]) == (400, vector["expect"]), (vector, body)


def test_personal_data_is_sealed_at_rest_and_survives_a_data_key_rotation(
    tmp_path: Path,
) -> None:
    from tests.conftest import run_xgw

    deployment = Deployment(tmp_path)
    try:
        first = deployment.file("YJS-SBZR")
        deployment.wait([first["id"]])
        from mappings.examples import applicant_of, bundle_form

        applicant = applicant_of(bundle_form("YJS-SBZR"))
        assert run_xgw("keys", "rotate-data-key", env=deployment.env).returncode == 0
        gateway = deployment.gateways[0]
        gateway.stop()
        gateway.start()
        second = deployment.file("YJS-SBZR")
        done = deployment.wait([first["id"], second["id"]])
        assert done[0]["sub_matters"][1]["result"]  # sealed under the old key: still opens
        gateway.stop()  # everything checkpointed into the database file
        stored = b"".join(path.read_bytes() for path in deployment.data.glob("gateway.sqlite3*"))
        assert stored  # the database and its WAL
        for secret in (applicant["id_number"], applicant["name"]):
            assert secret.encode() not in stored, secret
        gateway.start()
    finally:
        deployment.close()


def test_the_cli_and_mapping_data_hold_to_the_same_rules(tmp_path: Path) -> None:
    from mappings.catalogue import _row_problems
    from tests.conftest import run_xgw, xgw_env

    env = xgw_env(tmp_path / "var")
    for name, hall in (("win\n1", "hall"), ("win-１", "hall"), ("win-1", "hall\u202e")):
        created = run_xgw(
            "tokens", "create", "--role", "window", "--name", name, "--hall", hall, env=env
        )
        assert created.returncode == 2 and b"error: argument --" in created.stderr, (name, hall)
    import csv

    path = Path(__file__).parent.parent / "mappings" / "data" / "catalogue" / "420607.csv"
    with path.open(encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    for column, value in (("本地编码", "XZ-SB-００1"), ("事项名称", "名称\u202e")):
        _, reasons = _row_problems({**row, column: value})
        assert any(column in reason for reason in reasons), (column, reasons)
