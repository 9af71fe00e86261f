"""The storage contract: one suite, run against both stores — SQLite in a temporary folder and
the real PostgreSQL on 127.0.0.1:5432 (a database made and dropped per test). Then what only
the embedded store has (group commit, files made by older versions)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from gateway.core import cases as casecore
from gateway.core.lifecycle import MsgEvent
from gateway.storage import (
    AlreadyThere,
    Conflict,
    ExchangeRecord,
    NewCase,
    SchemaTooNew,
    Store,
    StoreUnavailable,
    open_store,
)
from gateway.storage import sqlite as sqlite_module
from gateway.storage.schema import LATEST, SQLITE_MIGRATIONS
from mappings.examples import bundle_form
from security.atrest import DataKeys, new_data_key
from security.backend import get_backend
from tests.conftest import dead_port
from tests.mapping_helpers import REGISTRY

Opener = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_new(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens stores on one new database (each call another node on it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'gateway.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened: list[Store] = []

    async def opener(**options: object) -> Store:
        store = await open_store(url, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    opener.url = url  # type: ignore[attr-defined]
    yield opener
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_new: Opener) -> Store:
    return await open_new()


async def _enqueue(
    store: Store,
    msg_id: str,
    held: bool = False,
    lease: tuple[str, float] | None = None,
    partner: str = "411329",
    case_id: str = "case-1",
) -> None:
    async with store.transaction() as tx:
        await tx.enqueue(
            msg_id=msg_id,
            case_id=case_id,
            sub_id="sub",
            partner=partner,
            domain="si",
            kind="request",
            matter="M",
            payload=b"{}",
            envelope=b"{}",
            held=held,
            lease=lease,
        )


FILED_AT = datetime(2026, 11, 28, 8, tzinfo=UTC).timestamp()  # SAMPLE time of the first case


def _case(n: int, form_bytes: int = 10) -> NewCase:
    form = bundle_form("YJS-YLBX")
    plan = casecore.plan_case(
        REGISTRY, "420607", REGISTRY.bundles["YJS-YLBX"], form, date(2026, 11, 28)
    )
    form["attachment_text"] = "x" * form_bytes  # SAMPLE filler: a large form
    return NewCase(
        id=f"case-{n:04d}",
        created=FILED_AT + n,  # one a second, in order
        updated=FILED_AT + 3600,
        status="in_progress",
        hall="hall-1",
        clerk=None,
        token_name="window-1",
        bundle="YJS-YLBX",
        title="医疗费用报销",
        filed_on="2026-11-28",
        idem_key=f"key-{n}",
        request_hash="h",
        person=None,
        plan=plan,
        states=casecore.initial_states(plan),
        version=1,
        form=form,
    )


async def _insert(store: Store, case: NewCase) -> None:
    async with store.transaction() as tx:
        await tx.insert_case(case)


# -- the contract ----------------------------------------------------------------------------


async def test_held_and_leased_messages_are_not_claimed_by_others(store: Store) -> None:
    await _enqueue(store, "held", held=True)
    await _enqueue(store, "leased", lease=("instance-a", time.time() + 30))
    await _enqueue(store, "free")
    assert [m.msg_id for m in await store.claim("instance-b", 10, 30)] == ["free"]
    async with store.transaction() as tx:
        await tx.release_hold("case-1")
    assert [m.msg_id for m in await store.claim("instance-b", 10, 30)] == ["held"]
    assert await store.claim("instance-b", 10, 30) == []
    # instance-a gives its lease back (or it runs out): the message is claimable again
    await store.release(["leased"], "instance-a")
    claimed = await store.claim("instance-b", 10, 30)
    assert [(m.msg_id, m.lease_owner) for m in claimed] == [("leased", "instance-b")]
    async with store.transaction() as tx:
        assert await tx.finish("leased")
        assert not await tx.finish("leased")  # a second finish changes nothing
    assert (await store.counts())["delivered"] == 1


async def test_a_partner_whose_circuit_is_open_does_not_starve_the_others(store: Store) -> None:
    """A partner down for a while builds up a backlog of due messages; a claim that skips that
    partner still finds the messages for the others behind it, however long the backlog."""
    for number in range(50):
        await _enqueue(store, f"down-{number}", partner="411300")
    await _enqueue(store, "healthy", partner="429000")
    claimed = await store.claim("instance-a", 2, 30, skip_partners={"411300"})
    assert [m.msg_id for m in claimed] == ["healthy"]
    # once its circuit lets messages through again, the backlog goes out oldest first
    assert [m.msg_id for m in await store.claim("instance-a", 2, 30)] == ["down-0", "down-1"]


async def test_nodes_claiming_at_once_never_share_a_message(open_new: Opener) -> None:
    """Four nodes (four stores on one database) claim together: each message goes to one."""
    nodes = [await open_new() for _ in range(4)]
    for number in range(200):
        await _enqueue(nodes[0], f"m{number:03d}")

    async def drain(store: Store, owner: str) -> list[str]:
        taken: list[str] = []
        while batch := await store.claim(owner, 7, 30):
            taken += [m.msg_id for m in batch]
        return taken

    results = await asyncio.gather(*(drain(s, f"node-{i}") for i, s in enumerate(nodes)))
    everything = [msg for taken in results for msg in taken]
    assert sorted(everything) == [f"m{n:03d}" for n in range(200)]  # each once, none lost
    owners = {m.msg_id: m.lease_owner for m in await nodes[0].outbox(limit=500)}
    for i, taken in enumerate(results):
        assert all(owners[msg] == f"node-{i}" for msg in taken)


async def test_a_taken_key_or_id_is_the_stores_own_answer_and_undoes_the_whole_write(
    store: Store,
) -> None:
    await _insert(store, _case(1))
    duplicate = _case(2)
    duplicate.idem_key = "key-1"  # another request with the same Idempotency-Key
    with pytest.raises(AlreadyThere):
        async with store.transaction() as tx:
            await tx.add_step(duplicate.id, "filed")
            await tx.insert_case(duplicate)
    assert await store.case(duplicate.id) is None
    assert await store.timeline(duplicate.id) == []  # nothing of the failed write remains
    await _enqueue(store, "m1")
    with pytest.raises(AlreadyThere):
        await _enqueue(store, "m1")
    await store.create_token("window-1", "window", "hall-1")
    with pytest.raises(AlreadyThere):
        await store.create_token("window-1", "admin", None)


async def test_states_are_written_only_over_the_version_read(open_new: Opener) -> None:
    """Two writers read one case; the second to write finds it moved on (``Conflict``)
    instead of silently undoing the first's change."""
    one, two = await open_new(), await open_new()
    await _insert(one, _case(1))
    first, second = await one.case("case-0001"), await two.case("case-0001")
    assert first is not None and second is not None
    async with one.transaction() as tx:
        await tx.save_states(first, casecore.cancel(first.states), "cancelled")
    with pytest.raises(Conflict):
        async with two.transaction() as tx:
            await tx.save_states(second, second.states, "in_progress")
    stored = await one.case("case-0001")
    assert stored is not None and (stored.status, stored.version) == ("cancelled", 2)


async def test_concurrent_changes_to_one_case_take_turns(open_new: Opener) -> None:
    """Ten writers on three nodes each load a case, add a step and save it: every change
    lands, the steps are numbered 1…10 (no duplicate number, no lost step)."""
    nodes = [await open_new() for _ in range(3)]
    await _insert(nodes[0], _case(1))

    async def change(store: Store, n: int) -> None:
        async with store.transaction() as tx:
            case = await tx.load_case("case-0001")
            assert case is not None
            await tx.add_step(case.id, f"step-{n}")
            await tx.save_states(case, case.states, case.status)

    await asyncio.gather(*(change(nodes[n % 3], n) for n in range(10)))
    timeline = await nodes[0].timeline("case-0001")
    assert [t["seq"] for t in timeline] == list(range(1, 11))
    assert sorted(t["step"] for t in timeline) == sorted(f"step-{n}" for n in range(10))
    stored = await nodes[0].case("case-0001")
    assert stored is not None and stored.version == 11


async def test_message_transitions_follow_the_lifecycle_table(store: Store) -> None:
    await _enqueue(store, "m1")
    async with store.transaction() as tx:
        # a pending message cannot be replayed (only a dead one)
        assert await tx.move_messages(MsgEvent.REPLAY, {"msg_id": "m1"}, attempts=0) == 0
        assert await tx.move_messages(MsgEvent.CANCEL, {"case_id": "case-1"}) == 1
        assert await tx.move_messages(MsgEvent.CANCEL, {"case_id": "case-1"}) == 0
    message = await store.message("m1")
    assert message is not None and message.status == "cancelled"


async def test_personal_data_is_sealed_at_rest_in_either_database(open_new: Opener) -> None:
    keys = DataKeys([new_data_key()], get_backend())
    store = await open_new(data_keys=keys)
    case = _case(7)
    case.form["applicant"] = {"name": "张三", "id_number": "420607199001011234"}  # SAMPLE
    await _insert(store, case)
    async with store.reading() as db:
        row = await db.fetchrow("SELECT form, plan, states FROM cases WHERE id = $1", case.id)
    assert row is not None
    for column in ("form", "plan", "states"):
        assert b"420607199001011234" not in bytes(row[column])
        assert "张三".encode() not in bytes(row[column])
    form = await store.case_form(case.id)
    assert form is not None and form["applicant"]["name"] == "张三"
    # A read of the case leaves the form sealed: only case_form opens it.
    opened = keys.opened
    loaded = await store.case(case.id)
    assert loaded is not None and not hasattr(loaded, "form")
    assert keys.opened == opened + 2  # its plan and its states
    # a sealed value is bound to its row: copied onto another case it does not open
    other = _case(8)
    await _insert(store, other)
    async with store.transaction() as tx:
        await tx.db.execute("UPDATE cases SET form = $1 WHERE id = $2", row["form"], other.id)
        await tx.db.execute("UPDATE cases SET plan = $1 WHERE id = $2", row["plan"], other.id)
    with pytest.raises(Exception, match=r"(?i)tag|authentic|open"):
        await store.case_form(other.id)
    with pytest.raises(Exception, match=r"(?i)tag|authentic|open"):
        await store.case(other.id)


async def test_materials_are_kept_in_sealed_chunks_and_only_unfiled_ones_discarded(
    open_new: Opener,
) -> None:
    from gateway.services.materials import take_upload

    keys = DataKeys([new_data_key()], get_backend())
    store = await open_new(data_keys=keys)
    scan = b"%PDF-1.7\n" + os.urandom(200_000)  # SAMPLE: four chunks

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 30_000):
            yield data[i : i + 30_000]

    filed = await take_upload(store, "invoices", pieces(scan), 1 << 20)
    refused = await take_upload(store, "cost-list", pieces(scan[:1000]), 1 << 20)
    assert (filed.kind, filed.size, filed.chunks) == ("pdf", len(scan), 4)
    async with store.transaction() as tx:
        assert await tx.attach_materials("case-1", [filed.id]) == 1
        await tx.add_licence("case-1", "id-card", "1.2.156.3005.2.X", "11010519491231002X")
    # what the filing made its case's stays whole when the filing's uploads are discarded
    await store.discard_materials([filed.id, refused.id])
    kept = await store.case_materials("case-1")
    assert [(m.code, m.kind) for m in kept] == [("id-card", "licence"), ("invoices", "pdf")]
    assert kept[0].licence == {"identifier": "1.2.156.3005.2.X", "holder": "11010519491231002X"}
    assert b"".join(await store.material_chunks(filed.id, 0, 10)) == scan
    async with store.reading() as db:
        rows = await db.fetch("SELECT material_id, data FROM material_chunk")
        licence = await db.fetchrow("SELECT licence FROM material WHERE code = 'id-card'")
    assert {row["material_id"] for row in rows} == {filed.id}  # the refused one: nothing left
    assert all(bytes(row["data"])[:4] == b"XGWR" for row in rows)  # sealed at rest
    assert licence is not None and b"11010519491231002X" not in bytes(licence["licence"])
    # a chunk moved to another place does not open
    async with store.transaction() as tx:
        await tx.db.execute(
            "UPDATE material_chunk SET data = (SELECT data FROM material_chunk WHERE idx = 0) "
            "WHERE idx = 1"
        )
    with pytest.raises(ValueError):
        await store.material_chunks(filed.id, 0, 10)

    # an upload that breaks leaves nothing
    async def broken() -> AsyncIterator[bytes]:
        yield scan[:100_000]
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await take_upload(store, "cost-list", broken(), 1 << 20)
    async with store.reading() as db:
        left = await db.fetch("SELECT id FROM material WHERE status <> 'attached'")
    assert list(left) == []


async def test_materials_are_purged_after_their_case_is_finished_and_the_retention(
    open_new: Opener,
) -> None:
    from gateway.services.materials import take_upload

    store = await open_new()

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    open_case, done_case = _case(1), _case(2)
    done_case.status = "done"
    for case in (open_case, done_case):
        await _insert(store, case)
        kept = await take_upload(store, "invoices", one(b"%PDF-1.7 SAMPLE"), 1 << 20)
        async with store.transaction() as tx:
            await tx.attach_materials(case.id, [kept.id])
    orphan = await take_upload(store, "cost-list", one(b"%PDF-1.7 SAMPLE"), 1 << 20)
    assert await store.materials_stored() == (3, 3 * len(b"%PDF-1.7 SAMPLE"))
    # retention not yet over (the done case was updated an hour after FILED_AT), uploads young
    assert await store.purge_materials(FILED_AT, time.time() - 3600) == 0
    # past it: the done case's files and the unfiled upload go; the open case's stay
    assert await store.purge_materials(FILED_AT + 7200, time.time() + 1) == 2
    assert [m.case_id for m in await store.case_materials(open_case.id)] == [open_case.id]
    assert await store.case_materials(done_case.id) == []
    async with store.reading() as db:
        chunks = await db.fetch("SELECT material_id FROM material_chunk")
    assert orphan.id not in {row["material_id"] for row in chunks} and len(chunks) == 1


async def test_a_listing_reads_neither_forms_nor_payloads(store: Store) -> None:
    import tracemalloc

    for n in range(60):
        await _insert(store, _case(n, 1 << 20))
    tracemalloc.start()
    page = await store.list_cases({}, 50, None)
    matter = page[0].plan[0].matter
    by_matter = await store.list_cases({"matter": matter}, 50, None)
    following = await store.list_cases({}, 50, (page[-1].created, page[-1].id))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(page) == len(by_matter) == 50 and len(following) == 10
    assert peak < 4 << 20, peak  # 60 MiB of forms stored; a page reads a few kilobytes each
    assert all(p.payload is None for case in page for p in case.plan)
    assert [c.id for c in page + following] == [f"case-{n:04d}" for n in range(60)]


async def test_every_time_is_seconds_since_the_epoch_and_comes_back_as_given(
    store: Store,
) -> None:
    """One time representation at the store's interface, whatever each column keeps inside:
    cases, timelines, messages and exchange records give back the floats they were given (to
    their column's precision), and a time range's bound inside a second is honoured."""
    for n in range(3):
        await _insert(store, _case(n))
    case = await store.case("case-0001")
    assert case is not None and (case.created, case.updated) == (FILED_AT + 1, FILED_AT + 3600)
    # a bound inside a second: the case filed at FILED_AT + 1 is after FILED_AT + 0.5
    later = await store.list_cases({}, 50, None, created_from=FILED_AT + 0.5)
    assert [c.id for c in later] == ["case-0001", "case-0002"]
    before = await store.list_cases({}, 50, None, created_to=FILED_AT + 1.5)
    assert [c.id for c in before] == ["case-0000", "case-0001"]
    page = await store.list_cases({}, 1, (case.created, case.id))
    assert [c.id for c in page] == ["case-0002"]

    began = time.time()
    async with store.transaction() as tx:
        await tx.add_step(case.id, "sample_step")
    [step] = await store.timeline(case.id)
    assert isinstance(step["time"], float) and abs(step["time"] - began) < 5

    await _enqueue(store, "m-time")
    stored = await store.message("m-time")
    assert stored is not None and isinstance(stored.created, float)
    assert abs(stored.created - began) < 5

    at = FILED_AT + 7.123  # exchange records keep the millisecond
    record = ExchangeRecord(
        node="n1", direction="outbound", partner="411323", protocol="rest", operation="apply",
        matter="M", message_id="m-time", time=at, request_at=at, response_at=None,
        request_bytes=1, response_bytes=None, outcome="answered",
    )  # fmt: skip
    await store.record_exchanges([record])
    [found] = await store.exchange_records({}, 10, None, time_from=FILED_AT + 7.1225)
    assert abs(found["time"] - at) < 1e-6 and found["response_at"] is None
    assert await store.exchange_records({}, 10, None, time_from=FILED_AT + 7.1235) == []


async def test_schema_is_migrated_once_and_a_newer_one_refused(open_new: Opener) -> None:
    stores = await asyncio.gather(*(open_new() for _ in range(3)))  # three nodes start at once
    assert [await s.schema_version() for s in stores] == [LATEST] * 3
    async with stores[0].transaction() as tx:
        versions = await tx.db.fetch("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in versions] == list(range(1, LATEST + 1))  # each once
        await tx.db.execute("INSERT INTO schema_version (version) VALUES ($1)", LATEST + 1)
    with pytest.raises(SchemaTooNew, match="newer than this gateway"):
        await open_new()


async def test_a_database_that_does_not_answer_is_unavailable_not_a_crash() -> None:
    with pytest.raises(StoreUnavailable):
        await open_store(f"postgresql://postgres@127.0.0.1:{dead_port()}/xgw")


# -- the embedded store only -----------------------------------------------------------------


async def test_group_commit_syncs_the_wal_once_for_what_each_task_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = await open_store(url, group_commit=True)
    synced: list[str] = []
    real_sync = sqlite_module._sync_data

    def recording_sync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_sync(fd)

    monkeypatch.setattr(sqlite_module, "_sync_data", recording_sync)

    async def writer(msg_id: str) -> None:
        await _enqueue(store, msg_id)
        await store.durable()

    async def reader() -> None:
        await store.durable()  # wrote nothing: nothing to wait for

    await reader()
    assert synced == []
    await asyncio.gather(*(writer(f"m{i}") for i in range(5)), reader())
    assert synced == [str(tmp_path / "gateway.db-wal")]  # five commits, one sync
    await writer("m5")
    assert len(synced) == 2
    other = await open_store(url)  # e.g. the CLI: sees every committed message
    assert len(await other.outbox()) == 6
    await other.close()
    await store.close()


async def test_without_group_commit_each_commit_is_already_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    calls: list[int] = []
    monkeypatch.setattr(sqlite_module, "_sync_data", calls.append)
    await _enqueue(store, "m1")
    await store.durable()
    assert calls == []  # synchronous=FULL: SQLite synced inside COMMIT
    async with store.reading() as db:
        assert (await db.fetch("PRAGMA synchronous"))[0]["synchronous"] == 2  # FULL
    await store.close()


async def test_embedded_listings_go_through_indexes(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    await _insert(store, _case(1))
    from gateway.storage.base import SUMMARY_COLUMNS

    async with store.reading() as db:
        for query in (
            f"SELECT {SUMMARY_COLUMNS} FROM cases ORDER BY created, id LIMIT 50",
            "SELECT case_id FROM case_matter WHERE matter = 'x'",
            "SELECT msg_id FROM outbox WHERE case_id = 'c' AND status = 'in_flight'",
        ):
            plan = " ".join(row["detail"] for row in await db.fetch("EXPLAIN QUERY PLAN " + query))
            # through an index, in its order: no scan, no sort
            assert (("USING" in plan and "INDEX" in plan) or "PRIMARY KEY" in plan) and (
                "TEMP B-TREE" not in plan
            ), plan
    await store.close()


async def test_a_store_made_before_schema_versions_is_adopted_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "gateway.db"
    case = _case(1)
    with sqlite3.connect(path) as db:  # as an older version wrote it: no versions, no routing
        for migration in SQLITE_MIGRATIONS:
            for statement in migration.statements:
                db.execute(statement)
        db.execute("DROP TABLE schema_version")
        db.execute("DROP TABLE case_matter")
        db.execute("ALTER TABLE cases DROP COLUMN routing")
        columns = [r[1] for r in db.execute("PRAGMA table_info(cases)")]
        row = {**case.__dict__, "form": orjson.dumps(case.form)}
        row["plan"], row["states"] = orjson.dumps(case.plan), orjson.dumps(case.states)
        row["created"] = row["updated"] = "2026-11-28T08:00:01Z"  # as v1 wrote times: text
        db.execute(
            f"INSERT INTO cases ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row[c] for c in columns],
        )
    store = await open_store(f"sqlite:///{path}")
    assert await store.schema_version() == LATEST
    listed = await store.list_cases({"matter": case.plan[0].matter}, 10, None)
    assert [c.id for c in listed] == [case.id] and listed[0].plan[0].payload is None
    await store.close()


async def test_a_node_that_stopped_beating_loses_its_leases_at_once(open_new: Opener) -> None:
    """Messages leased to a node whose heartbeat is older than ``dead_after`` go to the next
    claim, without waiting out their leases; a live node's leases hold; a node that stopped
    cleanly is forgotten, not dead."""
    alive, dead, survivor = await open_new(), await open_new(), await open_new()
    await _enqueue(alive, "held-by-alive", lease=("alive", time.time() + 30))
    await _enqueue(dead, "held-by-dead", lease=("dead", time.time() + 30))
    await dead.heartbeat("dead", "node-2", time.time() - 60)
    await alive.heartbeat("alive", "node-1", time.time())
    assert await survivor.claim("survivor", 10, 30, dead_after=5) == []  # both beat just now
    async with dead.transaction() as tx:  # node-2 was killed 10 s ago: its beats stopped
        await tx.db.execute(
            "UPDATE node_heartbeat SET seen = $1 WHERE owner = $2", time.time() - 10, "dead"
        )
    taken = await survivor.claim("survivor", 10, 30, dead_after=5)
    assert [(m.msg_id, m.taken_from, m.lease_owner) for m in taken] == [
        ("held-by-dead", "dead", "survivor")
    ]
    assert await survivor.claim("survivor", 10, 30, dead_after=5) == []  # now the survivor's
    beats = {b["owner"]: b["node"] for b in await survivor.heartbeats()}
    assert beats == {"alive": "node-1", "dead": "node-2"}
    await alive.forget_owner("alive")
    assert [b["owner"] for b in await survivor.heartbeats()] == ["dead"]
