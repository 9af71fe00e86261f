"""Partners file cases with 襄州 over SOAP (zeep as the real client) and REST; hostile input."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from zeep import Client, Settings
from zeep.exceptions import Fault

from security import envelope as env
from tests.conftest import eventually
from tests.harness import Deployment, http
from tests.partner_helpers import Partner, contact_letter

SECURE = Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True, strict=True)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path, protocol="mixed")
    try:
        yield deployed
    finally:
        deployed.close()


def _wait_result(deployment: Deployment, ref: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats: dict[str, Any] = deployment.stats()["411329"]
        if ref in stats["results"]:
            return stats
        time.sleep(0.2)
    raise AssertionError(f"no result for {ref}: {deployment.stats()}")


def _outbox_statuses(deployment: Deployment) -> set[str]:
    counts = deployment.xgw("outbox", "list", "--status", "all").splitlines()[-1]
    return {part.split(":")[0] for part in counts.split("; ")}


def _zeep(deployment: Deployment) -> Client:
    return Client(f"{deployment.url}/soap/v1?wsdl", settings=SECURE)  # type: ignore[no-untyped-call]


def test_zeep_files_a_transfer_and_gets_a_signed_receipt_and_the_result(
    deployment: Deployment,
) -> None:
    xinye = Partner(deployment.data)
    client = _zeep(deployment)
    sealed = xinye.seal(contact_letter(), idem_key="XY-CASE-SOAP-1")
    reply = client.service.SubmitCase(Envelope=sealed.as_dict())
    receipt_envelope = env.envelope_from_mapping({k: reply[k] for k in env.FIELD_NAMES})
    receipt = xinye.open(receipt_envelope)  # verifies 襄州's signature, decrypts
    assert receipt["status"] == "accepted" and receipt["matter"] == "XZ-SB-001"
    assert receipt_envelope.idem_key == sealed.msg_id and receipt_envelope.sender_region == "420607"
    # the case reached our back office and its result came back to 新野, sealed
    stats = _wait_result(deployment, "XY-CASE-SOAP-1")
    assert stats["results"]["XY-CASE-SOAP-1"] == 1
    assert stats["result_bodies"]["XY-CASE-SOAP-1"]["outcome"] == "done"
    assert deployment.stats()["local"]["cases"] == 1
    # a resend of the same message: the same receipt number, no second case
    resent = client.service.SubmitCase(Envelope=sealed.as_dict())
    again = xinye.open(env.envelope_from_mapping({k: resent[k] for k in env.FIELD_NAMES}))
    assert again["receipt_no"] == receipt["receipt_no"]
    # the same case in a new message (the partner never got our receipt): the same case, whose
    # number derives from the partner's reference, so it survives our losing the first write
    refiled = xinye.seal(contact_letter(), idem_key="XY-CASE-SOAP-1")
    answer = client.service.SubmitCase(Envelope=refiled.as_dict())
    third = xinye.open(env.envelope_from_mapping({k: answer[k] for k in env.FIELD_NAMES}))
    assert third["receipt_no"] == receipt["receipt_no"]
    assert receipt["receipt_no"].startswith("IN-411329-")
    # the partner asks for the status of its case
    query = xinye.seal({"receipt_no": receipt["receipt_no"]}, kind="query", idem_key="q-1")
    answered = client.service.QueryStatus(Envelope=query.as_dict())
    status = xinye.open(env.envelope_from_mapping({k: answered[k] for k in env.FIELD_NAMES}))
    assert status["case_status"] in ("done", "result_delivered") and status["matter"] == "XZ-SB-001"
    eventually(  # every delivery to the back office finished, so none can come after
        lambda: not {"pending", "in_flight"} & _outbox_statuses(deployment),
        "the outbox settling",
    )
    assert deployment.stats()["local"]["seen_twice"] == []
    assert deployment.xgw("audit", "verify").strip().endswith("log verifies")


def test_the_same_over_rest(deployment: Deployment) -> None:
    xinye = Partner(deployment.data)
    sealed = xinye.seal(contact_letter(), idem_key="XY-CASE-REST-1")
    status, body = http("POST", f"{deployment.url}/partner/v1/cases", raw=sealed.to_json())
    assert status == 200, body
    receipt = xinye.open(env.envelope_from_mapping(body))
    assert receipt["status"] == "accepted"
    _wait_result(deployment, "XY-CASE-REST-1")
    # ReportResult for one of OUR messages: 新野 reports on a 联系函 we sent it
    case = deployment.file("YJS-SBZR")
    deployment.wait([case["id"]])
    ours = next(
        s["detail"]["message_id"]
        for s in deployment.case(case["id"])["timeline"]
        if s["step"] == "queued" and s["detail"]["partner"] == "411329"
    )
    report = xinye.seal(
        {"status": "accepted", "result": {"blzt": "已办结"}}, kind="result", idem_key=ours
    )
    status, body = http("POST", f"{deployment.url}/partner/v1/results", raw=report.to_json())
    assert status == 200 and xinye.open(env.envelope_from_mapping(body))["status"] == "accepted"
    steps = [s["step"] for s in deployment.case(case["id"])["timeline"]]
    assert "partner_reported_result" in steps
    # a partner cannot report on a message that was not sent to it
    shiyan = Partner(deployment.data, "420300")
    foreign = shiyan.seal({"x": 1}, kind="result", idem_key=ours)  # sealed by 十堰 for 襄州
    status, problem = http("POST", f"{deployment.url}/partner/v1/results", raw=foreign.to_json())
    assert status == 403 and problem["code"] == "MESSAGE_NOT_YOURS"
    # … nor ask about another partner's case
    query = shiyan.seal({"receipt_no": receipt["receipt_no"]}, kind="query", idem_key="q-2")
    status, problem = http("POST", f"{deployment.url}/partner/v1/status", raw=query.to_json())
    assert status == 403 and problem["code"] == "CASE_NOT_YOURS"
    # … and a query that is not one gets a clear refusal (a list here was a 500)
    for number, odd in enumerate(([receipt["receipt_no"]], {"no": 1}, 5)):
        query = xinye.seal({"receipt_no": odd}, kind="query", idem_key=f"q-odd-{number}")
        status, problem = http("POST", f"{deployment.url}/partner/v1/status", raw=query.to_json())
        assert (status, problem["code"]) == (400, "PAYLOAD_MALFORMED"), problem
    status, document = http("GET", f"{deployment.url}/partner/v1/openapi.json")
    assert document["openapi"] == "3.1.0" and "/partner/v1/cases" in document["paths"]


SOAP = """<?xml version="1.0" encoding="UTF-8"?>{prolog}
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<g:SubmitCaseRequest xmlns:g="urn:xgw:gateway:1">{inner}</g:SubmitCaseRequest></soap:Body></soap:Envelope>"""


def _soap(
    deployment: Deployment, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    try:
        return _post_soap(deployment, body, headers)
    except requests.exceptions.ConnectionError:
        if len(body) <= 10 * 1024 * 1024:
            raise
        return 413, ""  # the server may answer 413 and close while the client still sends


def _post_soap(
    deployment: Deployment, body: bytes, headers: dict[str, str] | None
) -> tuple[int, str]:
    response = requests.post(
        f"{deployment.url}/soap/v1",
        data=body,
        timeout=10,
        headers={
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": '"urn:xgw:gateway:1/SubmitCase"',
            **(headers or {}),
        },
    )
    return response.status_code, response.text


def _fault_code(text: str) -> str:
    match = re.search(r"<d:code>([A-Z_]+)</d:code>", text)
    assert match, text[:300]
    return match.group(1)


def test_hostile_input_is_refused_with_its_code_and_the_service_keeps_answering(
    deployment: Deployment, tmp_path: Path
) -> None:
    from security import envelope_xml

    xinye = Partner(deployment.data)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT", encoding="utf-8")

    def good() -> str:
        return envelope_xml.to_xml(xinye.seal(contact_letter())).split(b"?>", 1)[1].decode()

    laughs = (
        '<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + "]>"
    )
    hostile = {
        "billion laughs": (
            SOAP.format(prolog=laughs, inner="&i;").encode(),
            {},
            "XML_DTD_FORBIDDEN",
        ),
        "XXE local file": (
            SOAP.format(
                prolog=f'<!DOCTYPE x [<!ENTITY e SYSTEM "file://{secret}">]>', inner="&e;"
            ).encode(),
            {},
            "XML_DTD_FORBIDDEN",
        ),
        "SSRF external": (
            SOAP.format(
                prolog='<!DOCTYPE x SYSTEM "http://127.0.0.1:9/evil.dtd">', inner=""
            ).encode(),
            {},
            "XML_DTD_FORBIDDEN",
        ),
        "deep nesting": (
            SOAP.format(prolog="", inner="<a>" * 200 + "</a>" * 200).encode(),
            {},
            "XML_TOO_DEEP",
        ),
        "invalid UTF-8": (
            SOAP.format(
                prolog="",
                inner="<x>\udcff</x>".encode("utf-8", "surrogateescape").decode("latin-1"),
            ).encode("latin-1"),
            {},
            "XML_MALFORMED",
        ),
        "SOAP 1.2": (
            SOAP.format(prolog="", inner=good())
            .replace(
                "http://schemas.xmlsoap.org/soap/envelope/",
                "http://www.w3.org/2003/05/soap-envelope",
            )
            .encode(),
            {"Content-Type": "application/soap+xml"},
            "SOAP_VERSION_MISMATCH",
        ),
        "wrong SOAPAction": (
            SOAP.format(prolog="", inner=good()).encode(),
            {"SOAPAction": '"urn:xgw:gateway:1/QueryStatus"'},
            "SOAP_ACTION_MISMATCH",
        ),
        "oversized body": (b"<x>" + b"a" * 11_000_000 + b"</x>", {}, "BODY_TOO_LARGE"),
    }
    sealed = xinye.seal(contact_letter())
    tampered = replace(
        sealed,
        ciphertext=sealed.ciphertext[:-6]
        + ("AAAA==" if not sealed.ciphertext.endswith("AAAA==") else "BBBB=="),
    )
    stale = xinye.seal(contact_letter(), created=env.now_utc() - timedelta(seconds=900))
    shiyan = Partner(deployment.data, "420300")
    wrong_jurisdiction = replace(shiyan.seal(contact_letter()), sender_region="411329")
    unauthorized_kind = xinye.seal(contact_letter(), kind="receipt")
    sealed_cases = {
        "tampered signature": (tampered, "SIGNATURE_INVALID"),
        "stale timestamp": (stale, "STALE"),
        "key from the wrong jurisdiction": (wrong_jurisdiction, "KEY_WRONG_JURISDICTION"),
        "wrong operation": (unauthorized_kind, "WRONG_OPERATION"),
    }
    for name, (body, headers, code) in hostile.items():
        started = time.monotonic()
        status, text = _soap(deployment, body, headers)
        assert status in (413, 500), (name, status)
        if code != "BODY_TOO_LARGE" or status == 500:
            assert _fault_code(text) == code, name
        assert "TOP-SECRET" not in text
        assert time.monotonic() - started < 5, name
    for name, (envelope, code) in sealed_cases.items():
        status, text = _soap(
            deployment,
            SOAP.format(
                prolog="", inner=envelope_xml.to_xml(envelope).split(b"?>", 1)[1].decode()
            ).encode(),
        )
        assert status == 500 and _fault_code(text) == code, (name, text[:300])
        status, problem = http("POST", f"{deployment.url}/partner/v1/cases", raw=envelope.to_json())
        assert problem["code"] in (code, "REPLAYED"), (name, problem)
    # a replayed nonce: the same envelope, first accepted, then its copy with a new message id
    first = xinye.seal(contact_letter(), idem_key="XY-CASE-REPLAY")
    assert http("POST", f"{deployment.url}/partner/v1/cases", raw=first.to_json())[0] == 200
    status, problem = http(
        "POST",
        f"{deployment.url}/partner/v1/cases",
        raw=replace(first, msg_id="another-id").to_json(),
    )
    assert status in (401, 409) and problem["code"] in ("SIGNATURE_INVALID", "REPLAYED")
    # unknown key, revoked key, unauthorized matter: 新野 files a matter it may not (partners.yaml)
    stranger = __import__("tests.security_helpers", fromlist=["new_key"]).new_key()
    unknown = env.seal(
        b"{}",
        env.Header(
            "m-unknown",
            "request",
            "k",
            env.Party("411329", "xinye-gw"),
            env.Party("420607", "xiangzhou-gw-1"),
            "XY-SB-001",
            env.now_utc(),
        ),
        stranger,
        xinye.trust.recipient_key("420607", env.now_utc()).key,
        xinye.sealer.backend,
    )
    status, problem = http("POST", f"{deployment.url}/partner/v1/cases", raw=unknown.to_json())
    assert status == 401 and problem["code"] == "KEY_UNKNOWN"
    # the service still answers a good request after all that
    reply = _zeep(deployment).service.SubmitCase(
        Envelope=xinye.seal(contact_letter(), idem_key="XY-AFTER").as_dict()
    )
    assert (
        xinye.open(env.envelope_from_mapping({k: reply[k] for k in env.FIELD_NAMES}))["status"]
        == "accepted"
    )
    rejected = deployment.xgw("audit", "show", "--event", "message.rejected", "--limit", "1000")
    assert rejected.count("message.rejected") >= len(hostile) + 2 * len(sealed_cases) + 2
    with pytest.raises(Fault):
        _zeep(deployment).service.SubmitCase(Envelope=tampered.as_dict())


def _trickled(url: str, path: str, headers: dict[str, str], seconds: float) -> tuple[int, str]:
    """POST ``path`` announcing 1,000 body bytes and sending one every 0.2 s: the response
    (status, body) and when it came, in seconds after the headers went out."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    with socket.create_connection((host, int(port)), timeout=seconds) as connection:
        connection.sendall(head.encode() + b"\r\n<")
        started, answer = time.monotonic(), b""
        connection.settimeout(0.2)
        while time.monotonic() - started < seconds and b"\r\n\r\n" not in answer:
            try:
                answer += connection.recv(65536)
            except TimeoutError:
                connection.sendall(b"a")
        took = time.monotonic() - started
        status_line, _, rest = answer.partition(b"\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", rest).group(1))  # type: ignore[union-attr]
        body = rest.split(b"\r\n\r\n", 1)[1]
        connection.settimeout(5)
        while len(body) < length:
            body += connection.recv(65536)
    return int(status_line.split()[1]), f"{took:.2f} " + body.decode()


def test_a_body_trickling_in_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    """A slow POST (a body sent a byte at a time, for ever) is refused when
    ``body_read_seconds`` has passed since its headers, over SOAP, REST and the Windows API,
    with its code, audited; the next request is answered as usual."""
    deployment = Deployment(tmp_path, extra_env={"XGW_BODY_READ_SECONDS": "1"})
    try:
        xinye = Partner(deployment.data)
        cases = {
            "/soap/v1": (
                {"Content-Type": "text/xml", "SOAPAction": '"urn:xgw:gateway:1/SubmitCase"'},
                500,
            ),
            "/partner/v1/cases": ({"Content-Type": "application/json"}, 408),
            "/api/v1/cases": (
                {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {deployment.token}",
                    "Idempotency-Key": "slow-body-0001",
                },
                408,
            ),
        }
        for path, (headers, expected) in cases.items():
            status, answer = _trickled(deployment.url, path, headers, seconds=10)
            took, _, body = answer.partition(" ")
            assert status == expected, (path, body[:300])
            assert 0.9 < float(took) < 4, (path, took)
            if path == "/soap/v1":
                assert _fault_code(body) == "BODY_TIMEOUT"
            else:
                problem = json.loads(body)
                assert (problem["code"], problem["status"]) == ("BODY_TIMEOUT", 408)
            # the service answers others at once
            good = xinye.seal(contact_letter(), idem_key=f"XY-AFTER-SLOW-{len(path)}")
            assert http("POST", f"{deployment.url}/partner/v1/cases", raw=good.to_json())[0] == 200
        audit = deployment.xgw("audit", "show", "--limit", "1000")
        assert audit.count("BODY_TIMEOUT") >= len(cases)
    finally:
        deployment.close()


def test_revoked_key_and_unauthorized_matter(deployment: Deployment) -> None:
    import yaml

    shiyan = Partner(deployment.data, "420300")
    trust_file = deployment.data / "keys" / "trust.yaml"
    trust = yaml.safe_load(trust_file.read_text(encoding="utf-8"))
    trust["revoked"] = [
        {"key_id": shiyan.trust.signing_key(env.now_utc()).key_id, "reason": "compromised"}
    ]
    trust_file.write_text(yaml.safe_dump(trust, allow_unicode=True), encoding="utf-8")
    # 新野 may only file 异地就医备案 with us; the restart reads the new trust file too
    deployment.configure_partner("411329", inbound_matters=["XZ-YB-001"])
    status, problem = http(
        "POST",
        f"{deployment.url}/partner/v1/cases",
        raw=Partner(deployment.data, "420300").seal(contact_letter(), matter="SY-SB-001").to_json(),
    )
    assert status == 401 and problem["code"] == "KEY_REVOKED"
    xinye = Partner(deployment.data)
    status, problem = http(
        "POST", f"{deployment.url}/partner/v1/cases", raw=xinye.seal(contact_letter()).to_json()
    )
    assert status == 403 and problem["code"] == "MATTER_NOT_AUTHORIZED"
    audit = deployment.xgw("audit", "show", "--event", "message.rejected", "--limit", "100")
    assert "KEY_REVOKED" in audit and "MATTER_NOT_AUTHORIZED" in audit


@pytest.mark.redis
def test_a_partners_rate_limit_is_counted_across_instances_in_redis(
    tmp_path: Path, redis_url: str
) -> None:
    """新野 may send 3 messages a minute: two gateway instances on one Redis count them
    together, so its fourth is refused (429 RATE_LIMITED, audited) whichever instance it
    reaches, while 十堰, another partner, is not held up by 新野's count."""
    deployment = Deployment(tmp_path, protocol="mixed", separate_simulator=True)
    try:
        deployment.gateways.pop().stop()
        deployment.configure_partner("411329", restart=False, rate_limit_per_minute=3)
        instances = [
            deployment.add_gateway(XGW_REDIS_URL=redis_url, XGW_INSTANCE_ID=name)
            for name in ("gw-a", "gw-b")
        ]
        if time.time() % 60 > 50:  # the count is per clock minute: start the four in one
            time.sleep(61 - time.time() % 60)
        xinye = Partner(deployment.data)
        answers = []
        for n in range(4):
            sealed = xinye.seal(contact_letter(), idem_key=f"XY-RATE-{n}")
            url = f"{instances[n % 2].url}/partner/v1/cases"
            answers.append(http("POST", url, raw=sealed.to_json()))
        assert [status for status, _ in answers] == [200, 200, 200, 429]
        assert answers[3][1]["code"] == "RATE_LIMITED"
        shiyan = Partner(deployment.data, "420300")
        status, body = http(
            "POST",
            f"{instances[1].url}/partner/v1/cases",
            raw=shiyan.seal(contact_letter(), matter="SY-SB-001", idem_key="SY-1").to_json(),
        )
        assert status == 200, body
        rejected = deployment.xgw("audit", "show", "--event", "message.rejected")
        assert "RATE_LIMITED" in rejected
    finally:
        deployment.close()
