"""`xgw serve` as a real subprocess on a loopback port: health, readiness, graceful stop."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Served, dead_port, run_xgw, xgw_env
from tests.harness import update_partner, write_partners


def _get(url: str) -> tuple[int, dict[str, object], dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_healthz_and_readyz_with_embedded_defaults(tmp_path: Path) -> None:
    served = Served(tmp_path / "var")
    try:
        status, body, headers = _get(served.base + "/healthz")
        assert status == 200 and body["status"] == "ok"
        assert headers["X-Request-ID"]
        status, body, _ = _get(served.base + "/readyz")
        assert status == 200, body
        assert body["checks"] == {
            "database": "ok",
            "store_writes": "ok",
            "delivery": "ok",
            "audit_signing": "ok",
        }
        status, body, headers = _get(served.base + "/no/such/path")
        assert status == 404
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["code"] == "NOT_FOUND"
        # no software or version named to a stranger, on an answer or a refusal
        assert headers["Server"] == "xgw"
    finally:
        code, err = served.stop()
    assert code == 0
    assert b"gateway.stopped" in err
    assert (tmp_path / "var").is_dir()


@pytest.mark.redis
def test_readyz_with_redis_up(tmp_path: Path, redis_url: str) -> None:
    served = Served(tmp_path / "var", XGW_REDIS_URL=redis_url)
    try:
        status, body, _ = _get(served.base + "/readyz")
        assert status == 200
        assert body["checks"] == {
            "database": "ok",
            "store_writes": "ok",
            "delivery": "ok",
            "redis": "ok",
            "audit_signing": "ok",
        }
    finally:
        served.stop()


def test_readyz_is_503_while_configured_redis_is_down(tmp_path: Path) -> None:
    served = Served(tmp_path / "var", XGW_REDIS_URL=f"redis://127.0.0.1:{dead_port()}/0")
    try:
        status, body, _ = _get(served.base + "/healthz")
        assert status == 200  # alive, just not ready
        status, body, _ = _get(served.base + "/readyz")
        assert status == 503
        checks = body["checks"]
        assert isinstance(checks, dict) and (checks["redis"], checks["database"]) == ("down", "ok")
    finally:
        served.stop()


def test_request_id_from_caller_is_echoed_if_safe(tmp_path: Path) -> None:
    served = Served(tmp_path / "var")
    try:
        request = urllib.request.Request(
            served.base + "/healthz", headers={"X-Request-ID": "window-7-abcdef"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["X-Request-ID"] == "window-7-abcdef"
        request = urllib.request.Request(
            served.base + "/healthz", headers={"X-Request-ID": "bad id\twith spaces"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["X-Request-ID"] != "bad id\twith spaces"
    finally:
        served.stop()


def _serve_with_partners(tmp_path: Path, change: dict[str, object], **env: str) -> tuple[int, str]:
    partners = tmp_path / "partners.yaml"
    write_partners(partners, dead_port(), "mixed")
    update_partner(partners, "411329", **change)
    result = run_xgw(
        "serve",
        env=xgw_env(
            tmp_path / "var", XGW_PARTNERS_FILE=str(partners), XGW_PORT=str(dead_port()), **env
        ),
    )
    return result.returncode, result.stderr.decode()


def test_serve_refuses_a_bad_partner_registry_naming_the_key(tmp_path: Path) -> None:
    code, err = _serve_with_partners(tmp_path, {"timeout_seconds": -1})
    assert code == 78, err  # EX_CONFIG, as for any other configuration error
    assert "partners.yaml: partners.0.timeout_seconds: Input should be greater than 0" in err
    assert "Traceback" not in err


def test_instances_sharing_work_need_a_lease_twice_the_partner_timeout(tmp_path: Path) -> None:
    """With Redis, another instance may take a message whose lease ran out: a lease shorter
    than two partner timeouts could let it send one that is still waiting for its answer."""
    redis = f"redis://127.0.0.1:{dead_port()}/0"
    code, err = _serve_with_partners(
        tmp_path, {"timeout_seconds": 3}, XGW_REDIS_URL=redis, XGW_DELIVERY_LEASE_SECONDS="5"
    )
    assert code == 78, err
    assert "delivery_lease_seconds (5) must be at least twice partner 411329's " in err
    assert "timeout_seconds (3)" in err and "Traceback" not in err


def test_a_malformed_request_is_refused_and_logged_without_its_bytes(tmp_path: Path) -> None:
    """HTTP that does not parse is answered 400 by aiohttp's parser, before any handler: its
    log line names the error's type, with no traceback and none of the stranger's bytes (here
    an ID number in a header with a control character), as a warning — the client's fault, not
    an error of ours for an operator to act on — and it is audited."""
    served = Served(tmp_path / "var")
    try:
        port = int(served.base.rsplit(":", 1)[1])
        for raw in (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Id: 420607199001011234\x01\r\n\r\n",
            b"POST /api/v1/cases HTTP/1.1\r\nHost: x\r\nContent-Length: 4206071990\x00\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(raw)
                assert sock.recv(100).startswith(b"HTTP/1.0 400 ")
        status, _, _ = _get(served.base + "/healthz")
        assert status == 200  # still answering
    finally:
        _, err = served.stop()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    refused = [line for line in lines if line.get("error_type") == "BadHttpMessage"]
    assert len(refused) == 2 and all(line["status"] == 400 for line in refused), lines
    assert {line["level"] for line in refused} == {"warning"}
    # ... and each is in the exchange log, as every refusal is
    shown = run_xgw(
        "audit", "show", "--event", "request.rejected", env=xgw_env(tmp_path / "var")
    ).stdout.decode()
    assert shown.count("HTTP_MALFORMED") == 2, shown
    assert b"Traceback" not in err and b"4206071990" not in err


def test_serve_on_a_taken_port_says_so_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_xgw("serve", env=xgw_env(tmp_path / "var", XGW_PORT=str(port)))
    err = result.stderr.decode()
    assert result.returncode == 71, err  # EX_OSERR
    assert (
        f"xgw: cannot serve: error while attempting to bind on address ('127.0.0.1', {port})" in err
    )
    assert "Traceback" not in err


def test_a_registry_letting_partners_file_with_no_back_office_stops_start_up(
    tmp_path: Path,
) -> None:
    def without_back_office(document: dict[str, Any]) -> None:
        del document["local_systems"]

    err = _start_refused_with(tmp_path, without_back_office)
    assert "local_systems: partner 411329 may file matters with us" in err


def _start_refused_with(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], **partners_options: Any
) -> str:
    """A partner registry changed by ``edit`` stops ``xgw serve`` as a configuration error
    (exit 78): what it said, with no traceback."""
    partners = tmp_path / "partners.yaml"
    write_partners(partners, dead_port(), "mixed", **partners_options)
    document = yaml.safe_load(partners.read_text(encoding="utf-8"))
    edit(document)
    partners.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    result = run_xgw(
        "serve",
        env=xgw_env(tmp_path / "var", XGW_PARTNERS_FILE=str(partners), XGW_PORT=str(dead_port())),
    )
    err = result.stderr.decode()
    assert result.returncode == 78, err
    assert "Traceback" not in err
    return err


def test_xgw_env_2_over_a_soap_wsdl_without_materials_stops_start_up(tmp_path: Path) -> None:
    """A partner on XGW-ENV/2 whose SOAP WSDL declares no materials: refused when the gateway
    starts, not when the first case with materials is sent."""
    from adapters.partner_soap import PACKAGED_WSDL

    def with_version_1_wsdl(document: dict[str, Any]) -> None:
        document["partners"][0]["endpoints"][0]["wsdl"] = str(PACKAGED_WSDL)  # 新野's 社保 SOAP

    err = _start_refused_with(tmp_path, with_version_1_wsdl, soap_envelope=2)
    assert "partner 411329: endpoints[0]: XGW-ENV/2 over SOAP needs a WSDL" in err


def test_the_default_setup_carries_a_partners_case_to_done(tmp_path: Path) -> None:
    """No configuration at all: a case 新野 files reaches our (simulated) back office, is
    decided, and its result goes back to 新野."""
    from tests.conftest import eventually, free_port
    from tests.partner_helpers import Partner, contact_letter

    sim_port = free_port()
    served = Served(tmp_path / "var", "--with-simulator", XGW_SIMULATOR_PORT=str(sim_port))
    try:
        assert "local_systems" in (tmp_path / "var" / "partners.yaml").read_text("utf-8")
        sealed = Partner(tmp_path / "var").seal(contact_letter(), idem_key="XY-DEFAULT-1")
        request = urllib.request.Request(
            served.base + "/partner/v1/cases",
            data=sealed.to_json(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        def result_reported() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{sim_port}/_sim/stats") as stats:
                return "XY-DEFAULT-1" in json.loads(stats.read())["411329"]["results"]

        eventually(result_reported, "the result reported to 新野")
    finally:
        _, err = served.stop()
    assert b"PartnerConfigError" not in err and b'"level":"error"' not in err


def test_a_client_gone_mid_body_is_a_warning(tmp_path: Path) -> None:
    served = Served(tmp_path / "var")
    try:
        port = int(served.base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /partner/v1/cases HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b'\r\nContent-Length: 100000\r\n\r\n{"v": '
            )
        status, _, _ = _get(served.base + "/healthz")
        assert status == 200
    finally:
        _, err = served.stop()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    gone = [line for line in lines if line["event"] == "request.client_gone"]
    assert gone and {line["level"] for line in gone} == {"warning"}, lines
    assert not [line for line in lines if line["level"] == "error"]


def test_the_data_folder_is_the_owners_alone(tmp_path: Path) -> None:
    """Whatever the caller's umask, the files holding personal data and keys are 0600 in a
    0700 folder; looser modes found at start-up are reported."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        served = Served(tmp_path / "var")
        served.stop()
    finally:
        os.umask(old)
    data = tmp_path / "var"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.name == "gateway.sqlite3-wal" for p in files) or files
    loose = [(p, oct(stat.S_IMODE(p.stat().st_mode))) for p in files if p.stat().st_mode & 0o077]
    assert not loose, loose
    (data / "copied.sqlite3").write_bytes(b"")
    os.chmod(data / "copied.sqlite3", 0o644)
    again = Served(tmp_path / "var")
    _, err = again.stop()
    warned = [
        json.loads(line)
        for line in err.decode().splitlines()
        if line.startswith("{") and "data_dir.loose_mode" in line
    ]
    assert [w["path"] for w in warned] == [str(data / "copied.sqlite3")]


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_oversized_filings_cost_little_memory(tmp_path: Path) -> None:
    """A 10 MiB filing is refused before it is read (max_form_bytes), and a form of thousands
    of rows before it is built into cases; the gateway's peak memory grows by less than the
    body's size, not by ten times it."""
    import uuid

    from mappings.examples import applicant_of, bundle_form
    from tests.harness import http

    served = Served(tmp_path / "var")
    try:
        token = (
            run_xgw(
                "tokens",
                "create",
                "--role",
                "window",
                "--name",
                "w",
                "--hall",
                "h",
                env=xgw_env(tmp_path / "var"),
            )
            .stdout.decode()
            .strip()
        )
        form = bundle_form("YJS-YLBX")
        big = {**form, "claim": {**form["claim"], "note": "x" * (10 * 1024 * 1024)}}
        rows = {**form, "claim": {**form["claim"], "receipts": form["claim"]["receipts"] * 3000}}
        before = _peak_rss_mib(served.proc.pid)
        for body, status, code in ((big, 413, "BODY_TOO_LARGE"), (rows, 422, "VALIDATION_FAILED")):
            filing = {"bundle": "YJS-YLBX", "applicant": applicant_of(form), "form": body}
            answer = http(
                "POST",
                served.base + "/api/v1/cases",
                filing,
                token,
                {"Idempotency-Key": uuid.uuid4().hex},
            )
            assert (answer[0], answer[1]["code"]) == (status, code), answer
        assert _peak_rss_mib(served.proc.pid) - before < 10, "peak memory grew by a body's size"
    finally:
        served.stop()
