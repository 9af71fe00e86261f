"""What an operator watches: /metrics scraped from a running gateway after real traffic."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import eventually
from tests.harness import Deployment, http, http_exchange


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    deployed = Deployment(tmp_path)
    try:
        yield deployed
    finally:
        deployed.close()


def _scrape(deployment: Deployment, token: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, headers, body = http_exchange("GET", f"{deployment.url}/metrics", token=token)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain")
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            series.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return series


def _value(
    series: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for found, v in series.get(name, []) if labels.items() <= found.items())


def test_metrics_after_traffic_show_every_series_with_sensible_values(
    deployment: Deployment,
) -> None:
    ids = [deployment.file("YJS-SBZR")["id"], deployment.file("YJS-YLBX")["id"]]
    deployment.wait(ids)
    # a partner's message we refuse, and a window's request we refuse
    assert http("POST", f"{deployment.url}/partner/v1/cases", raw=b"{not json")[0] == 400
    assert (
        http("GET", f"{deployment.url}/api/v1/cases/no-such-case", token=deployment.token)[0] == 404
    )
    monitor = deployment.xgw("tokens", "create", "--role", "monitor", "--name", "prom").strip()
    # not for anyone: no token, or a window's, is refused
    assert http("GET", f"{deployment.url}/metrics")[0] == 401
    assert http("GET", f"{deployment.url}/metrics", token=deployment.token)[0] == 403
    series = _scrape(deployment, monitor)

    # deliveries: 4 + 2 messages to 新野 (SOAP and REST), each answered once
    sent = _value(series, "xgw_partner_requests_total", partner="411329", outcome="answered")
    assert sent == 6
    assert {labels["protocol"] for labels, _ in series["xgw_partner_requests_total"]} == {
        "soap",
        "rest",
    }
    assert _value(series, "xgw_partner_request_seconds_count", partner="411329") == 6
    assert 0 < _value(series, "xgw_partner_request_seconds_sum", partner="411329") < 60
    assert _value(series, "xgw_outbox_messages", status="delivered") >= 6
    assert _value(series, "xgw_outbox_oldest_pending_seconds") == 0  # nothing waits
    # the two cases' 电子证照 (the 居民身份证 once for the 社保转入, the 医疗票据): no file bytes
    assert _value(series, "xgw_materials_stored", measure="count") == 2
    assert _value(series, "xgw_materials_stored", measure="bytes") == 0
    assert _value(series, "xgw_partner_circuit_open", partner="411329") == 0
    assert "xgw_dead_letters_total" not in series or _value(series, "xgw_dead_letters_total") == 0
    # refusals by our own code; the windows' API by route template, never by case id
    assert _value(series, "xgw_inbound_refusals_total") >= 1
    filed = _value(
        series,
        "xgw_http_request_seconds_count",
        route="/api/v1/cases",
        method="POST",
        status="201",
    )
    assert filed == 2
    routes = {labels["route"] for labels, _ in series["xgw_http_request_seconds_count"]}
    assert "/api/v1/cases/{case_id}" in routes
    assert not any(case_id in route for route in routes for case_id in ids)
    # sealing and opening, the exchange log, keys, the loop, the build
    assert _value(series, "xgw_envelope_seconds_count", operation="seal") >= 6
    assert _value(series, "xgw_envelope_seconds_count", operation="authenticate") >= 6
    assert _value(series, "xgw_audit_unsigned_entries") >= 0
    assert _value(series, "xgw_audit_seconds_since_checkpoint") >= -1
    expiry = series["xgw_key_expiry_days"]
    assert {labels["owner"] for labels, _ in expiry} >= {"ours", "411329"}
    assert all(0 < days < 366 * 5 for _, days in expiry)  # SAMPLE keys: valid for a while yet
    assert 0 <= _value(series, "xgw_event_loop_lag_seconds") < 5
    assert series["xgw_build_info"][0][0]["version"]
    # the operator's one screen agrees
    status = deployment.xgw("status", "--verify")
    assert "attention  nothing" in status and "verified   the log verifies" in status, status
    lines = {line.split()[0] for line in status.splitlines()}
    assert lines >= {"database", "node", "outbox", "partner", "key", "log", "verified"}
    assert "delivered 6" in status.replace(",", "")
    xinye = next(line for line in status.splitlines() if line.startswith("partner    411329"))
    assert "新野县" in xinye and "last delivered never" not in xinye and "dead 0" in xinye
    # nothing personal in any label
    from mappings.examples import applicant_of, bundle_form

    person = applicant_of(bundle_form("YJS-SBZR"))["id_number"]
    assert all(
        person not in value
        for samples in series.values()
        for labels, _ in samples
        for value in labels.values()
    )


def _promtool() -> str:
    import shutil

    from tests.conftest import IN_CI

    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail("promtool missing in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return found


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    import subprocess

    from tests.harness import ROOT

    rules = ROOT / "docker" / "prometheus"
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=rules, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], cwd=rules, capture_output=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_and_the_dashboard_name_only_series_the_gateway_exposes() -> None:
    import json
    import re

    import yaml

    from gateway.metrics import Metrics
    from tests.harness import ROOT

    exposed = {"up"}
    for family in Metrics().registry.collect():
        exposed |= {sample.name for sample in family.samples} | {family.name}
        exposed |= {f"{family.name}_{suffix}" for suffix in ("bucket", "count", "sum", "total")}
    rules = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((ROOT / "docker" / "grafana" / "xgw-dashboard.json").read_text())
    expressions += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    functions = {"sum", "max", "min", "count", "rate", "increase", "histogram_quantile", "by"}
    for expression in expressions:
        for name in set(re.findall(r"\b(xgw_[a-z_]+|up)\b", expression)) - functions:
            assert name in exposed, (name, expression)
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert all(f"`{alert}`" in operations for alert in alerts)  # each has its runbook entry


def test_a_backup_taken_while_serving_restores_and_resumes_without_sending_twice(
    tmp_path: Path,
) -> None:
    """A backup taken mid-traffic (deliveries in the partner's hands), restored into an empty
    data folder and served from there: the log verifies, and the messages that were still on
    their way go out again — answered from the partner's records, applied once."""
    deployment = Deployment(tmp_path, separate_simulator=True)
    try:
        # slower than the partner's 3 s timeout: no send is answered until the latency is
        # lifted, so the backup finds them unfinished however long it takes to run
        deployment.faults({"411329": {"latency_ms": 5000}})
        ids = [deployment.file("YJS-SBZR")["id"] for _ in range(3)]
        eventually(
            lambda: deployment.stats()["411329"]["in_flight"] >= 1, "sends in the partner's hands"
        )
        backup = tmp_path / "backup"
        out = deployment.xgw("backup", "--out", str(backup))
        assert "files in" in out
        deployment.faults({"411329": {"latency_ms": 0}})
        deployment.wait(ids)
        before = deployment.stats()["411329"]
        applied, answered_again = before["applied"], before["duplicates_answered"]
        deployment.gateways[0].stop()
        # the disk is lost: the backup goes into a new data folder, served by a new gateway
        restored = tmp_path / "restored"
        env = {**deployment.env, "XGW_DATA_DIR": str(restored)}
        from tests.conftest import run_xgw

        result = run_xgw("restore", str(backup), env=env)
        assert result.returncode == 0, result.stderr
        again = run_xgw("restore", str(backup), env=env)  # never over a store
        assert again.returncode == 1 and b"already holds a store" in again.stderr
        deployment.gateways.clear()
        gateway = deployment.add_gateway(XGW_DATA_DIR=str(restored))
        deployment.wait(ids)  # those the backup saw unfinished are sent again and finish
        stats = deployment.stats()["411329"]
        assert stats["applied_twice"] == []
        assert stats["applied"] == applied  # nothing applied a second time
        assert stats["duplicates_answered"] > answered_again  # what the backup saw unsent
        verified = run_xgw("audit", "verify", env={**gateway.env})
        assert verified.returncode == 0 and verified.stdout.decode().strip().endswith(
            "log verifies"
        ), verified
    finally:
        deployment.close()


def test_a_backup_that_changed_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from gateway.storage import StoreError
    from gateway.storage.backup import back_up, restore

    data = tmp_path / "var"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "k.pem").write_text("SAMPLE key")
    back_up(data, tmp_path / "b", progress=lambda _line: None)
    (tmp_path / "b" / "keys" / "k.pem").write_text("changed")
    with pytest.raises(StoreError, match="changed since the backup"):
        restore(tmp_path / "b", tmp_path / "new", progress=lambda _line: None)
    assert not (tmp_path / "new").exists()


def test_listeners_speak_tls_only_when_configured_and_refuse_a_bad_certificate(
    tmp_path: Path,
) -> None:
    import ssl
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from tests.conftest import free_port, run_xgw, xgw_env

    cert, key = _certificate(tmp_path)
    port = free_port()
    env = xgw_env(
        tmp_path / "var",
        XGW_PORT=str(port),
        XGW_TLS_CERT_FILE=str(cert),
        XGW_TLS_KEY_FILE=str(key),
    )
    log = open(tmp_path / "tls.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=log, stderr=log
    )
    trusting = ssl.create_default_context(cafile=str(cert))
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=trusting, timeout=2
                ) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "tls.log").read_text()
                return False

        eventually(answers, "the gateway answering over TLS")
        with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)  # plain HTTP

        # a client able to speak TLS 1.1 (lowered security level) is refused; 1.2 is served
        def handshake(version: str) -> str:
            return subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version,
                 "-cipher", "DEFAULT@SECLEVEL=0"],
                input=b"", capture_output=True, timeout=30, check=False,
            ).stdout.decode(errors="replace")  # fmt: skip

        assert "New, (NONE), Cipher is (NONE)" in handshake("-tls1_1")
        assert "New, TLSv1.2, Cipher is" in handshake("-tls1_2")
        assert b'"tls":true' in (tmp_path / "tls.log").read_bytes().replace(b" ", b"")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    # a certificate that does not load stops the start, naming the keys, before anything opens
    key.write_text("not a key")
    started = time.monotonic()
    refused = run_xgw("serve", env=env, timeout=60)
    assert refused.returncode == 78, refused
    assert b"tls_cert_file / tls_key_file" in refused.stderr
    assert b"Traceback" not in refused.stderr
    assert time.monotonic() - started < 30


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


def _nginx() -> str:
    import shutil

    from tests.conftest import IN_CI

    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        if IN_CI:
            pytest.fail("nginx missing in CI (.ci/run installs Debian's nginx)")
        pytest.skip("nginx not installed (Debian package nginx)")
    return found


def _certificate(folder: Path) -> tuple[Path, Path]:
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_behind_the_shipped_nginx_slow_headers_are_cut_off_and_clients_stay_apart(
    tmp_path: Path,
) -> None:
    """docker/nginx/xgw-front.conf.template in front of a gateway: a client trickling its
    headers is cut off at the header deadline; the gateway, trusting the proxy, counts refusals
    per real client — one client throttled does not throttle another."""
    import http.client
    import re
    import socket
    import ssl
    import subprocess
    import time

    from tests.conftest import free_port
    from tests.harness import ROOT

    nginx = _nginx()
    deployment = Deployment(
        tmp_path,
        extra_env={
            "XGW_TRUSTED_PROXIES": "127.0.0.1",
            "XGW_INBOUND_REFUSALS_PER_MINUTE": "3",
        },
    )
    cert, key = _certificate(tmp_path)
    port = free_port()
    values = {
        "XGW_RATE_PER_SECOND": "50",
        "XGW_RATE_BURST": "100",
        "XGW_UPSTREAM": deployment.url.removeprefix("http://"),
        "XGW_LISTEN": f"127.0.0.1:{port}",
        "XGW_TLS_CERT": str(cert),
        "XGW_TLS_KEY": str(key),
        "XGW_HEADER_TIMEOUT": "2s",
    }
    template = (ROOT / "docker" / "nginx" / "xgw-front.conf.template").read_text()
    server = re.sub(r"\$\{(XGW_[A-Z_]+)\}", lambda m: values[m.group(1)], template)
    prefix = tmp_path / "nginx"
    prefix.mkdir(mode=0o777)
    (prefix / "front.conf").write_text(server)
    (prefix / "nginx.conf").write_text(
        f"worker_processes 1;\nerror_log {prefix}/error.log;\npid {prefix}/nginx.pid;\n"
        "events { worker_connections 64; }\n"
        "http {\n  access_log off;\n"
        + "".join(f"  {kind}_temp_path {prefix}/{kind};\n" for kind in ("client_body", "proxy"))
        + "".join(f"  {kind}_temp_path {prefix}/{kind};\n" for kind in ("fastcgi", "uwsgi", "scgi"))
        + f"  include {prefix}/front.conf;\n}}\n"
    )
    proxy = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stderr=subprocess.PIPE,
    )
    trusting = ssl.create_default_context(cafile=str(cert))

    def post_from(source: str) -> int:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=trusting, timeout=10, source_address=(source, 0)
        )
        try:
            connection.request(
                "POST",
                "/partner/v1/cases",
                body=b"{not json",
                headers={"Content-Type": "application/json"},
            )
            return connection.getresponse().status
        finally:
            connection.close()

    try:

        def answering() -> bool:
            try:
                return post_from("127.0.0.9") in (400, 429)
            except OSError:
                assert proxy.poll() is None, proxy.stderr.read() if proxy.stderr else ""
                return False

        eventually(answering, "the gateway answering through nginx")
        # slowloris: a header line, then a byte every half second — cut off at the deadline
        raw = socket.create_connection(("127.0.0.1", port))
        slow = trusting.wrap_socket(raw, server_hostname="127.0.0.1")
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        began, closed_after = time.monotonic(), None
        slow.settimeout(0.5)
        while time.monotonic() - began < 10:
            try:
                slow.sendall(b"X")
                if slow.recv(4096) == b"":
                    closed_after = time.monotonic() - began
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - began
                break
        slow.close()
        assert closed_after is not None and 1.5 <= closed_after <= 4.5, closed_after
        # per real client: 127.0.0.2 is throttled after 3 refusals; 127.0.0.3 is not
        statuses = [post_from("127.0.0.2") for _ in range(5)]
        assert statuses[:3] == [400, 400, 400] and statuses[-1] == 429, statuses
        assert post_from("127.0.0.3") == 400
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        deployment.close()


def test_operational_records_of_each_exchange_by_time_range(deployment: Deployment) -> None:
    """Each send to a partner and each message a partner sent: when it passed, how big, how
    it ended — for auditors and admins, by time range, paged."""
    import time as clock

    began = clock.strftime("%Y-%m-%dT%H:%M:%S", clock.gmtime(clock.time() - 1))
    deployment.wait([deployment.file("YJS-YLBX")["id"]])
    status, refusal = http("POST", f"{deployment.url}/partner/v1/cases", raw=b"{not json")
    assert status == 400
    auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "a").strip()
    url = f"{deployment.url}/api/v1/operations/records?from={began}"
    assert http("GET", url, token=deployment.token)[0] == 403  # not a window's

    def records() -> list[dict[str, object]]:
        status, body = http("GET", url, token=auditor)
        assert status == 200, body
        return list(body["items"])

    found = eventually(lambda: records() if len(records()) >= 3 else None, "records written")
    outbound = [r for r in found if r["direction"] == "outbound"]
    assert len(outbound) == 2 and {r["outcome"] for r in outbound} == {"answered"}
    for record in outbound:
        assert record["partner"] == "411329" and record["message_id"]
        assert str(record["request_at"]) <= str(record["response_at"])
        assert int(record["request_bytes"]) > 0 and int(record["response_bytes"]) > 0  # type: ignore[call-overload]
    refused = [r for r in found if r["direction"] == "inbound"]
    assert [(r["outcome"], r["protocol"]) for r in refused] == [(refusal["code"], "rest")]
    assert refused[0]["request_bytes"] == len(b"{not json")
    # filtered and paged: one a page, the cursor leads to the next
    status, page = http("GET", url + "&direction=outbound&limit=1", token=auditor)
    assert status == 200 and len(page["items"]) == 1 and page["next"]
    status, rest = http(
        "GET", url + f"&direction=outbound&limit=1&cursor={page['next']}", token=auditor
    )
    assert [r["id"] for r in rest["items"]] != [r["id"] for r in page["items"]]
    assert http("GET", url + "&direction=sideways", token=auditor)[0] == 400


def test_keys_rotate_on_both_sides_with_signed_bundles_and_old_evidence_still_verifies(
    tmp_path: Path,
) -> None:
    """We and 新野 each rotate our signing key and import the other's signed bundle; after
    the restarts both sign with the new keys, cases go through, and the log and a case's
    evidence package signed before the rotation still verify."""
    import json

    from tests.conftest import run_xgw

    deployment = Deployment(tmp_path, separate_simulator=True)
    try:
        first = deployment.file("YJS-YLBX")["id"]
        deployment.wait([first])
        ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
        # the new keys sign at once here (partners import them right away); the old ones
        # stay valid a day: what they sign until each side restarts still verifies
        rotation = ("keys", "rotate", "--starts-in-days", "0", "--overlap-days", "1")
        deployment.xgw(*rotation, "--bundle", str(ours))
        our_new = json.loads(ours.read_text())["keys"][0]["key_id"]

        def partner_env(region: str) -> dict[str, str]:
            folder = deployment.data / "simulator" / region
            return {
                **deployment.env,
                "XGW_KEYS_DIR": str(folder),
                "XGW_KEY_PASSPHRASE_FILE": str(folder / "passphrase"),
                "XGW_REGION_CODE": region,
            }

        for region in ("411329", "420300", "421300", "429021"):  # every partner imports ours
            imported = run_xgw(
                "keys", "import-bundle", str(ours), "--name", "襄州区", env=partner_env(region)
            )
            assert imported.returncode == 0 and our_new in imported.stdout.decode(), imported
        rotated = run_xgw(*rotation, "--bundle", str(theirs), env=partner_env("411329"))
        assert rotated.returncode == 0, rotated
        their_new = json.loads(theirs.read_text())["keys"][0]["key_id"]
        deployment.xgw("keys", "import-bundle", str(theirs), "--name", "新野县")
        # a bundle changed on the way is refused
        forged = json.loads(theirs.read_text())
        forged["keys"][0]["not_after"] = "2099-01-01T00:00:00+00:00"
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        refused = run_xgw(
            "keys",
            "import-bundle",
            str(tmp_path / "forged.json"),
            "--name",
            "x",
            env=deployment.env,
        )
        assert refused.returncode == 1 and b"does not verify" in refused.stderr, refused
        assert deployment.simulator is not None
        deployment.simulator.stop()
        deployment.simulator.start()
        deployment.gateways[0].stop()
        deployment.gateways[0].start()

        second = deployment.file("YJS-YLBX")["id"]
        deployment.wait([second])
        auditor = deployment.xgw("tokens", "create", "--role", "auditor", "--name", "a").strip()
        status, page = http(
            "GET",
            f"{deployment.url}/api/v1/audit/entries?case_id={second}&limit=100",
            token=auditor,
        )
        assert status == 200
        actors = {(e["event"], e["actor"]) for e in page["items"]}
        assert ("message.queued", our_new) in actors  # we sign with the new key
        assert ("message.delivered", their_new) in actors  # 新野 answers with its new one
        verified = run_xgw("audit", "verify", env=deployment.env)
        assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
        package = tmp_path / "first.json"
        deployment.xgw("audit", "export", first, "--out", str(package))
        checked = run_xgw("audit", "verify-package", str(package), env=deployment.env)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    finally:
        deployment.close()


def test_mutual_tls_binds_each_partners_certificate_to_its_jurisdiction(tmp_path: Path) -> None:
    """With tls_client_ca_file, a partner's message must come with a client certificate
    partners.yaml lists for the region it claims: 新野's goes through with 新野's certificate;
    with 十堰's, or none, it is refused (403) and the refusal is in the exchange log; a
    certificate the CA did not issue does not get past the handshake. Windows need none."""
    import ssl
    import subprocess
    import urllib.error
    import urllib.request

    from tests.conftest import free_port, run_xgw, xgw_env
    from tests.harness import update_partner, write_partners
    from tests.partner_helpers import Partner, contact_letter

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=SAMPLE partners CA")  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (
        ("server", "/CN=127.0.0.1"),
        ("xinye", "/CN=xinye-gw"),
        ("shiyan", "/CN=shiyan-gw"),
    ):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "stranger.key", "-out", "stranger.pem", "-days", "2", "-subj", "/CN=stranger")  # fmt: skip

    def fingerprint(name: str) -> str:
        pem = (tmp_path / f"{name}.pem").read_text()
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()

    partners = tmp_path / "partners.yaml"
    write_partners(partners, free_port(), "rest")
    update_partner(partners, "411329", client_certificates=[fingerprint("xinye")])
    update_partner(partners, "420300", client_certificates=[fingerprint("shiyan")])
    port = free_port()
    env = xgw_env(
        tmp_path / "var",
        XGW_PORT=str(port),
        XGW_PARTNERS_FILE=str(partners),
        XGW_TLS_CERT_FILE=str(tmp_path / "server.pem"),
        XGW_TLS_KEY_FILE=str(tmp_path / "server.key"),
        XGW_TLS_CLIENT_CA_FILE=str(tmp_path / "ca.pem"),
    )
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=log, stderr=log
    )

    def client(certificate: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        if certificate is not None:
            context.load_cert_chain(
                tmp_path / f"{certificate}.pem", tmp_path / f"{certificate}.key"
            )
        return context

    def send(certificate: str | None, body: bytes) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/partner/v1/cases",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, context=client(certificate), timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=client(None), timeout=2
                ) as answer:
                    return bool(answer.status == 200)  # no client certificate: not needed here
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
                return False

        eventually(healthy, "the gateway answering over TLS")
        xinye = Partner(tmp_path / "var")

        def message(reference: str) -> bytes:
            return xinye.seal(contact_letter(), idem_key=reference).to_json()

        assert send("xinye", message("XY-MTLS-1"))[0] == 200
        status, refused = send("shiyan", message("XY-MTLS-2"))
        assert (status, refused["code"]) == (403, "CLIENT_CERT_WRONG_JURISDICTION")
        status, refused = send(None, message("XY-MTLS-3"))
        assert (status, refused["code"]) == (403, "CLIENT_CERT_REQUIRED")
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            send("stranger", message("XY-MTLS-4"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    shown = run_xgw("audit", "show", "--limit", "50", env=env).stdout.decode()
    assert "CLIENT_CERT_WRONG_JURISDICTION" in shown and "CLIENT_CERT_REQUIRED" in shown
