"""Several gateway nodes on one PostgreSQL and one Redis, each with its own data folder and no
shared file but the jurisdiction's keys, the simulator in its own process: a node killed, the
database restarted — nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import IN_CI, eventually, run_xgw
from tests.harness import Deployment, Process, http

pytestmark = pytest.mark.redis


def node_env(folder: Path, node: str, keys: Path) -> dict[str, str]:
    """A node's own settings: its data folder and id, and the jurisdiction's keys from
    ``keys`` (the signing key, the data keys, the audit HMAC key)."""
    return {
        "XGW_DATA_DIR": str(folder),
        "XGW_NODE_ID": node,
        "XGW_KEYS_DIR": str(keys),
        "XGW_KEY_PASSPHRASE_FILE": str(keys / "passphrase"),
        "XGW_AUDIT_HMAC_KEY_FILE": str(keys / "audit-hmac.key"),
    }


class Nodes(Deployment):
    """A first node set up as the sample deployment, more nodes beside it: each its own data
    folder (its own exchange-log chain), all with the jurisdiction's keys (one signing key,
    the data keys) and the partner registry."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str, **extra: str) -> None:
        self.shared = {
            "XGW_DATABASE_URL": database_url,
            "XGW_REDIS_URL": redis_url,
            "XGW_DELIVERY_LEASE_SECONDS": "30",  # a dead node's leases must not be waited out
            **extra,
        }
        super().__init__(tmp, separate_simulator=True, extra_env=self.shared)
        self.gateways[0].env["XGW_NODE_ID"] = "node-1"
        self.gateways[0].stop()
        self.gateways[0].start()

    def add_node(self, number: int) -> Process:
        name = f"node-{number}"
        env = {**self.shared, **node_env(self.tmp / name, name, self.data / "keys")}
        return self.add_gateway(False, **env)


@pytest.fixture
def nodes(
    tmp_path: Path, postgres_url: str, redis_url: str, request: pytest.FixtureRequest
) -> Iterator[Nodes]:
    deployed = Nodes(tmp_path, postgres_url, redis_url, **getattr(request, "param", {}))
    try:
        yield deployed
    finally:
        deployed.close()


def test_a_node_killed_mid_load_loses_nothing_and_its_work_is_taken_over(nodes: Nodes) -> None:
    second = nodes.add_node(2)
    first = nodes.gateways[0]
    nodes.faults({"411329": {"latency_ms": 400}})
    ids = [
        nodes.file("YJS-SBZR" if n % 2 else "YJS-YLBX", url=(first, second)[n % 2].url)["id"]
        for n in range(12)
    ]
    # any node answers any window: a case filed through one is read through the other
    assert nodes.case(ids[0], url=second.url)["id"] == ids[0]
    eventually(lambda: nodes.stats()["411329"]["in_flight"] >= 2, "sends in the partner's hands")
    first.kill()  # SIGKILL: no shutdown, its leases (30 s) left behind
    killed, killed_at = time.monotonic(), time.time()
    nodes.faults({"411329": {"latency_ms": 0}})

    def all_done() -> bool:
        return all(nodes.case(c, url=second.url)["status"] == "done" for c in ids)

    eventually(all_done, "every case done through the surviving node", timeout=60)
    assert time.monotonic() - killed < 30  # every case done before the dead node's leases end
    # taken over within 10 s: once its heartbeat (every 2 s) was 6 s old, at the next claim
    taken = [
        json.loads(line) for line in second.log().splitlines() if '"delivery.taken_over"' in line
    ]
    assert taken, "the survivor took nothing over"
    first_taken = datetime.fromisoformat(taken[0]["timestamp"].replace("Z", "+00:00"))
    assert 0 < first_taken.timestamp() - killed_at < 10, first_taken
    stats = nodes.stats()["411329"]
    assert stats["applied_twice"] == []  # nothing applied twice
    assert stats["applied"] == 6 * 4 + 6 * 2  # nothing lost: every message applied once
    # each node keeps its own chain in the database; one verification reads them all
    out = run_xgw("audit", "verify", env=second.env)
    report = out.stdout.decode()
    assert out.returncode == 0 and report.strip().endswith("log verifies"), out
    assert "node-1" in report and "node-2" in report, report


def test_a_scan_taken_in_by_one_node_is_sealed_and_sent_by_another(nodes: Nodes) -> None:
    """Materials live in the shared database, sealed at rest under the jurisdiction's data
    keys: the node that took the upload dies before the sub-matter carrying it is ready, and
    the other node seals it for the partner and delivers it."""
    from mappings.examples import sample_filing
    from tests.harness import file_with

    second = nodes.add_node(2)
    first = nodes.gateways[0]
    nodes.faults({"411329": {"latency_ms": 1500}})  # the 备案 still in the partner's hands
    scan = b"%PDF-1.7\n% SAMPLE invoice scan\n" + bytes(300_000)
    filing = {**sample_filing("YJS-YLBX"), "licences": []}
    status, case = file_with(first.url, nodes.token, filing, {"invoices": scan})
    assert status == 201, case
    eventually(lambda: nodes.stats()["411329"]["in_flight"] >= 1, "the 备案 sent by node 1")
    first.kill()
    nodes.faults({"411329": {"latency_ms": 0}})
    eventually(
        lambda: nodes.case(case["id"], url=second.url)["status"] == "done",
        "the case done through node 2",
        timeout=60,
    )
    stats = nodes.stats()["411329"]
    assert stats["materials"] == {"invoices": 1} and stats["material_bytes"] == len(scan)
    assert stats["applied_twice"] == []


def _cluster() -> list[str] | None:
    """``pg_ctlcluster VERSION NAME`` of the PostgreSQL on 127.0.0.1:5432, if this machine
    manages it (Debian's postgresql-common)."""
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    for line in subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout.splitlines():
        version, name, port, *_ = line.split()
        if port == "5432":
            return ["pg_ctlcluster", "--skip-systemctl-redirect", version, name]
    return None


# A send whose outcome could not be recorded (the database away) goes again once its lease
# runs out: a short one here (at least twice the partners' 3 s timeout).
@pytest.mark.parametrize("nodes", [{"XGW_DELIVERY_LEASE_SECONDS": "6"}], indirect=True)
def test_the_database_restarted_mid_load_503_meanwhile_nothing_acknowledged_lost(
    nodes: Nodes,
) -> None:
    cluster = _cluster()
    if cluster is None:
        if IN_CI:
            pytest.fail("CI must be able to restart PostgreSQL (pg_ctlcluster)")
        pytest.skip("this machine does not manage its PostgreSQL with pg_ctlcluster")
    second = nodes.add_node(2)
    nodes.faults({"411329": {"latency_ms": 500}})
    acknowledged = [nodes.file("YJS-SBZR", url=second.url)["id"] for _ in range(4)]
    eventually(lambda: nodes.stats()["411329"]["in_flight"] >= 2, "sends in the partner's hands")
    subprocess.run([*cluster, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        status, body = http(
            "POST",
            f"{second.url}/api/v1/cases",
            {"bundle": "YJS-SBZR", "form": {}},
            nodes.token,
            {"Idempotency-Key": "while-the-database-is-away"},
        )
        assert (status, body["code"]) == (503, "STORE_UNAVAILABLE"), (status, body)
        assert http("GET", f"{second.url}/readyz")[0] == 503
    finally:
        subprocess.run([*cluster, "start"], check=True, capture_output=True)
        nodes.faults({"411329": {"latency_ms": 0}})
    eventually(lambda: http("GET", f"{second.url}/readyz")[0] == 200, "ready again", 60)
    acknowledged += [nodes.file("YJS-YLBX", url=second.url)["id"] for _ in range(2)]
    nodes.wait(acknowledged, timeout=90)
    stats = nodes.stats()["411329"]
    assert stats["applied_twice"] == []  # sends repeated after the outage were answered
    assert stats["applied"] == 4 * 4 + 2 * 2  # from the partner's records, applied once


def test_serve_with_workers_shares_one_socket_and_restarts_a_dead_worker(tmp_path: Path) -> None:
    """`xgw serve --workers 2` on the embedded store: two gateway processes behind one port,
    each beating and delivering; one killed is started again and the service goes on."""
    import os
    import signal
    import sqlite3
    import uuid

    from mappings.examples import sample_filing
    from tests.conftest import free_port, xgw_env

    port = free_port()
    env = xgw_env(tmp_path / "var", XGW_SIMULATOR_PORT=str(free_port()), XGW_PORT=str(port))
    served = Process(
        ["serve", "--workers", "2", "--with-simulator"],
        env,
        f"http://127.0.0.1:{port}",
        tmp_path / "workers.log",
    )
    database = tmp_path / "var" / "gateway.sqlite3"

    def live_workers() -> set[int]:
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT owner FROM node_heartbeat WHERE seen > ?", (time.time() - 4,)
            ).fetchall()
        return {int(owner.rsplit("-", 1)[1]) for (owner,) in rows}

    def file_and_finish(count: int) -> None:
        ids = []
        for _ in range(count):
            status, case = http(
                "POST",
                f"{served.url}/api/v1/cases",
                sample_filing("YJS-SBZR"),
                token,
                {"Idempotency-Key": uuid.uuid4().hex},
            )
            assert status == 201, (status, case)
            ids.append(case["id"])
        for case_id in ids:
            eventually(
                lambda case_id=case_id: (
                    http(  # type: ignore[misc]
                        "GET", f"{served.url}/api/v1/cases/{case_id}", token=token
                    )[1]["status"]
                    == "done"
                ),
                f"{case_id} done",
            )

    try:
        token = (
            run_xgw(
                "tokens", "create", "--role", "window", "--name", "w", "--hall", "襄州", env=env
            )
            .stdout.decode()
            .strip()
        )
        workers = eventually(lambda: live_workers() if len(live_workers()) == 2 else None, "2")
        file_and_finish(6)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(live_workers() - {victim}) == 2, "the dead worker started again", 30)
        workers |= live_workers()
        file_and_finish(2)
        assert "gateway.worker_died" in served.log()
    finally:
        assert served.stop() == 0
    assert len(workers) == 3 and not any(Path(f"/proc/{pid}").exists() for pid in workers)
    with sqlite3.connect(database) as db:  # stopped cleanly: forgotten, not dead
        assert db.execute("SELECT COUNT(*) FROM node_heartbeat").fetchone()[0] == 1  # the victim


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_db_status_and_migrate_and_a_gateway_older_than_its_database(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    import asyncio

    from gateway.storage import open_store
    from gateway.storage.schema import LATEST
    from tests.conftest import xgw_env

    url = (
        f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    env = xgw_env(tmp_path / "var", XGW_DATABASE_URL=url)
    status = run_xgw("db", "status", env=env)
    assert status.returncode == 1, status
    assert f"schema version 0, this gateway's {LATEST} (needs `xgw db migrate`)" in (
        status.stdout.decode()
    )
    assert "password" not in status.stdout.decode()
    migrated = run_xgw("db", "migrate", env=env)
    assert migrated.returncode == 0
    assert f"migrated from schema version 0 to {LATEST}" in migrated.stdout.decode()
    again = run_xgw("db", "migrate", env=env)
    assert f"already at schema version {LATEST}" in again.stdout.decode()
    assert run_xgw("db", "status", env=env).returncode == 0

    async def newer() -> None:  # a newer gateway's migration
        store = await open_store(url)
        async with store.transaction() as tx:
            await tx.db.execute("INSERT INTO schema_version (version) VALUES ($1)", LATEST + 1)
        await store.close()

    asyncio.run(newer())
    status = run_xgw("db", "status", env=env)
    assert status.returncode == 1 and "newer than this gateway" in status.stdout.decode()
    served = run_xgw("serve", "--port", "0", env=env, timeout=60)
    assert served.returncode == 78, served
    assert f"newer than this gateway's {LATEST}" in served.stderr.decode()
    assert "Traceback" not in served.stderr.decode()


# The first revision with several nodes on PostgreSQL (schema 2, node heartbeats): the "old
# code" of a rolling upgrade to this one (schema 3, the exchange log in the database).
OLD_REVISION = "92c8a6111e7fcc3e9a90d32644c38e48ac64e339"


def _old_tree(tmp: Path) -> Path:
    """The old revision's source, from this repository's history."""
    from tests.harness import ROOT

    known = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD_REVISION}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        pytest.skip(f"this checkout has no history back to {OLD_REVISION[:10]} (a shallow clone)")
    tree = tmp / "old-code"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD_REVISION], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def test_a_rolling_upgrade_old_and_new_nodes_side_by_side(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """Old nodes run while the first new one migrates the database; both kinds serve side by
    side, then the old one is restarted as new. An old node started after the migration
    refuses the newer schema."""
    import uuid

    from mappings.examples import sample_filing
    from tests.conftest import free_port, xgw_env
    from tests.harness import write_partners

    old_code = _old_tree(tmp_path)
    sim_port = free_port()
    partners = tmp_path / "partners.yaml"
    # as during any rolling upgrade: nothing the old nodes cannot read (XGW-ENV/2 comes after)
    write_partners(partners, sim_port, "mixed", envelope_versions=False)
    base = xgw_env(
        tmp_path / "var",
        XGW_DATABASE_URL=postgres_url,
        XGW_REDIS_URL=redis_url,
        XGW_PARTNERS_FILE=str(partners),
        XGW_SIMULATOR_PORT=str(sim_port),
        XGW_DELIVERY_LEASE_SECONDS="6",
    )
    from gateway.audit.log import hmac_key_bytes
    from gateway.config import load_settings
    from gateway.devtools.sample_setup import ensure_sample_setup

    ensure_sample_setup(load_settings(environ=base))  # the jurisdiction's SAMPLE keys
    keys = tmp_path / "var" / "keys"
    hmac_key_bytes(keys / "audit-hmac.key", create=True)

    def env_of(name: str, old: bool) -> dict[str, str]:
        env = {**base, **node_env(tmp_path / name, name, keys)}
        if old:
            env["PYTHONPATH"] = str(old_code)
        return env

    def start(name: str, old: bool) -> Process:
        port = free_port()
        return Process(
            ["serve", "--port", str(port)],
            env_of(name, old),
            f"http://127.0.0.1:{port}",
            tmp_path / f"{name}-{'old' if old else 'new'}.log",
            cwd=old_code if old else Path(__file__).resolve().parent.parent,
        )

    simulator = Process(
        ["simulate-partner", "--seed", "7"],
        base,
        f"http://127.0.0.1:{sim_port}",
        tmp_path / "sim.log",
    )
    running: list[Process] = [simulator]
    try:
        old_node = start("node-a", old=True)  # the database at schema 2
        running.append(old_node)
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "tokens",
                "create",
                "--role",
                "window",
                "--name",
                "w",
                "--hall",
                "襄州",
            ],
            env=env_of("node-a", old=True),
            cwd=old_code,
            capture_output=True,
            check=True,
        )
        token = made.stdout.decode().strip()

        def file(node: Process) -> str:
            filing = sample_filing("YJS-YLBX")
            if node is old_node:  # the older API takes no materials (nor asks for them)
                del filing["licences"]
            status, case = http(
                "POST",
                f"{node.url}/api/v1/cases",
                filing,
                token,
                {"Idempotency-Key": uuid.uuid4().hex},
            )
            assert status == 201, (status, case)
            return str(case["id"])

        ids = [file(old_node) for _ in range(3)]
        new_node = start("node-b", old=False)  # migrates to schema 3 beside the old node
        running.append(new_node)
        for n in range(8):  # side by side: both take filings, both deliver
            ids.append(file((old_node, new_node)[n % 2]))

        def all_done() -> bool:
            return all(
                http("GET", f"{new_node.url}/api/v1/cases/{c}", token=token)[1]["status"] == "done"
                for c in ids
            )

        eventually(all_done, "every case done, old and new nodes side by side", timeout=60)
        old_node.stop()
        running.remove(old_node)
        refused = subprocess.run(  # the old code again: the schema is newer than it knows
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
            env=env_of("node-a", old=True),
            cwd=old_code,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0 and b"newer than this gateway" in refused.stderr
        upgraded = start("node-a", old=False)  # the upgrade: node-a with the new code
        running.append(upgraded)
        ids.append(file(upgraded))
        eventually(all_done, "the upgraded node's case done", timeout=60)
        stats = http("GET", f"{simulator.url}/_sim/stats")[1]["411329"]
        assert stats["applied_twice"] == []
    finally:
        for process in reversed(running):
            process.stop()
