"""Witnessed checkpoints, end to end: the gateway and the simulator as real processes, our
checkpoints countersigned by partners through the outbox, theirs by us over REST and SOAP
(zeep), and the rewrite of the log's end the issue reproduced — refused by the node itself and,
once its memory is gone, by the partners who witnessed what was rewritten."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from zeep import Client, Settings

from security import auditchain
from security import envelope as env
from security.auditchain import GENESIS
from security.backend import get_backend
from tests.audit_helpers import rewrite_the_end
from tests.conftest import eventually
from tests.harness import Deployment, http
from tests.partner_helpers import Partner

SECURE = Settings(forbid_dtd=True, forbid_entities=True, forbid_external=True, strict=True)
NATIVE = get_backend("native")
# small batches, signed often: many checkpoints, each asked of its witnesses
WITNESSING = {"XGW_AUDIT_CHECKPOINT_ENTRIES": "8", "XGW_AUDIT_CHECKPOINT_SECONDS": "1"}


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path, protocol="mixed", extra_env=WITNESSING)
    try:
        yield deployed
    finally:
        deployed.close()


def _witnessed_to_seqs(deployment: Deployment) -> list[tuple[int, str]]:
    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:
        return db.execute("SELECT to_seq, witness FROM audit_witness ORDER BY to_seq").fetchall()


def _ready(deployment: Deployment) -> tuple[int, dict[str, Any]]:
    status, body = http("GET", f"{deployment.url}/readyz")
    return status, dict(body)


def test_partners_witness_our_checkpoints_and_a_rewritten_end_is_refused_by_both(
    deployment: Deployment,
) -> None:
    cases = [deployment.file("YJS-SBZR")["id"] for _ in range(3)]
    deployment.wait(cases)

    # the checkpoints of batches holding exchanges with a partner come back countersigned
    def three_countersigned() -> list[tuple[int, str]] | None:
        rows = _witnessed_to_seqs(deployment)
        return rows if len({seq for seq, _ in rows}) >= 3 else None

    witnessed = eventually(three_countersigned, "three checkpoints countersigned")
    stats = deployment.stats()
    assert sum(stats[region]["witnessed"] for region in ("411329", "420300", "421300")) >= 3
    assert {witness for _seq, witness in witnessed} <= {"411329", "420300", "421300", "429021"}
    verified = deployment.xgw("audit", "verify")
    assert "log verifies" in verified and "witness-" not in verified
    package = deployment.tmp / "evidence.json"
    deployment.xgw("audit", "export", cases[0], "--out", str(package))
    exported = json.loads(package.read_text(encoding="utf-8"))
    assert exported["witnesses"] and exported["witness_keys"]
    assert "package verifies" in deployment.xgw("audit", "verify-package", str(package))

    # The attack: with write access to audit.sqlite3 only, delete the newest checkpoints back
    # to one a partner witnessed, change an entry after the last kept one, re-link the chain.
    gateway = deployment.gateways[0]
    gateway.stop()
    target = witnessed[-1][0]
    rewrite_the_end(deployment.data / "audit.sqlite3", first_dropped=target)
    # the countersignatures kept beside our checkpoints already contradict the rewrite
    caught = deployment.xgw_result("audit", "verify")
    assert caught.returncode == 1 and "FAIL witness-conflict" in caught.stdout, caught.stdout
    # the forger removes them too, and restarts the gateway: the node remembers what it signed
    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:
        db.execute("DELETE FROM audit_witness")
    gateway.start()

    def refusing() -> dict[str, Any] | None:
        status, body = _ready(deployment)
        return body if status == 503 and "audit_signing" in body["checks"] else None

    body = eventually(refusing, "the node refuses to sign")
    assert body["checks"]["audit_signing"].startswith("refused: ")
    assert "audit.rollback_detected" in gateway.log()
    # Whoever also controls the node's memory (here: an operator's accept-rollback) gets it to
    # sign the rewritten batch — and the partners who witnessed the original refuse it.
    deployment.xgw("audit", "accept-rollback", "--reason", "SAMPLE: the test's forger")
    eventually(lambda: _ready(deployment)[0] == 200, "signing again once accepted")
    refusals = eventually(
        lambda: {
            code: n
            for region, s in deployment.stats().items()
            if region != "local"
            for code, n in s["witness_refusals"].items()
        },
        "a partner refuses the rewritten checkpoint",
    )
    assert set(refusals) == {"CHECKPOINT_CONFLICT"}
    eventually(lambda: "audit.witness_refused" in gateway.log(), "the alert line")
    refused = [
        json.loads(line) for line in gateway.log().splitlines() if '"audit.witness_refused"' in line
    ]
    assert refused[0]["alert"] is True and refused[0]["code"] == "CHECKPOINT_CONFLICT"
    shown = deployment.xgw("audit", "show", "--event", "audit.witness_refused")
    assert "audit.witness_refused" in shown and "CHECKPOINT_CONFLICT" in shown
    accepted = deployment.xgw("audit", "show", "--event", "audit.rollback_accepted")
    assert "audit.rollback_accepted" in accepted
    # the rewritten batch itself says it was signed late
    notes = deployment.xgw_result("audit", "verify").stdout
    assert "note checkpoint-late" in notes, notes


def _checkpoint(
    partner: Partner, from_seq: int, to_seq: int, prev: str, salt: str = "a"
) -> auditchain.Checkpoint:
    """A checkpoint of 新野's own log (SAMPLE hashes), signed with its key."""
    key = partner.trust.signing_key(datetime.now(UTC))
    hashes = [auditchain.entry_hash(f"{salt}{n}".encode()) for n in range(from_seq, to_seq)]
    return auditchain.sign_checkpoint(
        "xinye-gw", from_seq, to_seq, hashes,
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), prev, key.scalar,
        key.public.point, key.key_id, NATIVE, auditchain.Interval(4, 60000),
    )  # fmt: skip


def _countersigned(partner: Partner, reply: env.Envelope) -> dict[str, Any]:
    answer = partner.open(reply)
    if answer["status"] == "accepted":
        witness = auditchain.witness_from(answer["result"])
        ours = partner.trust.sender_key(witness.key_id, "420607", datetime.now(UTC))
        assert auditchain.witness_signature_valid(witness, ours.key.point, NATIVE)
        assert witness.witness == "420607"
    return answer


def test_we_witness_a_partners_checkpoints_over_rest_and_soap_and_refuse_a_rewrite(
    deployment: Deployment,
) -> None:
    xinye = Partner(deployment.data)

    def over_rest(document: Any, key: str) -> dict[str, Any]:
        sealed = xinye.seal(document, kind="witness", matter="XGW-AUDIT", idem_key=key)
        status, body = http("POST", f"{deployment.url}/partner/v1/witness", raw=sealed.to_json())
        assert status == 200, body
        return _countersigned(xinye, env.envelope_from_json(json.dumps(body).encode()))

    first = _checkpoint(xinye, 0, 4, GENESIS)
    answer = over_rest(first.as_dict(), "xinye-gw:4")
    assert answer["status"] == "accepted" and answer["result"]["checkpoint"] == first.hash

    second = _checkpoint(xinye, 4, 8, first.hash)
    client = Client(f"{deployment.url}/soap/v1?wsdl", settings=SECURE)  # type: ignore[no-untyped-call]
    sealed = xinye.seal(second.as_dict(), kind="witness", matter="XGW-AUDIT", idem_key="xinye-gw:8")
    reply = client.service.WitnessCheckpoint(Envelope=sealed.as_dict())
    soap_answer = _countersigned(
        xinye, env.envelope_from_mapping({k: reply[k] for k in env.FIELD_NAMES})
    )
    assert soap_answer["status"] == "accepted"
    assert soap_answer["result"]["checkpoint"] == second.hash

    # 新野's log rewritten from seq 4: we witnessed the original, so we refuse the rewrite
    rewritten = _checkpoint(xinye, 4, 9, first.hash, salt="b")
    refused = over_rest(rewritten.as_dict(), "xinye-gw:9")
    assert refused["status"] == "rejected" and refused["code"] == "CHECKPOINT_CONFLICT"
    unlinked = _checkpoint(xinye, 8, 12, "ab" * 32)
    assert over_rest(unlinked.as_dict(), "xinye-gw:12")["code"] == "CHECKPOINT_CONFLICT"
    # what is not a checkpoint of theirs is refused too, each with its own code
    assert over_rest({"node": "x"}, "bad-1")["code"] == "CHECKPOINT_MALFORMED"
    assert over_rest([1, 2], "bad-2")["code"] == "CHECKPOINT_MALFORMED"
    forged = auditchain.Checkpoint(
        **{**_checkpoint(xinye, 8, 12, second.hash).as_dict(), "root": "00" * 32}
    )
    assert over_rest(forged.as_dict(), "bad-3")["code"] == "CHECKPOINT_INVALID"
    shown = deployment.xgw("audit", "show", "--event", "audit.witness_conflict")
    assert shown.count("audit.witness_conflict") == 2
    assert "audit.witnessed_for" in deployment.xgw(
        "audit", "show", "--event", "audit.witnessed_for"
    )
    # our record of what we countersigned, changed behind us: we countersign nothing we
    # cannot check against it, and say so (not a 500)
    import sqlite3

    with sqlite3.connect(deployment.data / "audit.sqlite3") as db:
        db.execute("UPDATE audit_witnessed SET to_seq = 'eight' WHERE to_seq = 8")
    third = _checkpoint(xinye, 8, 12, second.hash)
    assert over_rest(third.as_dict(), "xinye-gw:12b")["code"] == "WITNESS_UNAVAILABLE"
