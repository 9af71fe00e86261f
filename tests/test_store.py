"""The durable store's outbox and group commit, against a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.storage import sqlite as store_module
from gateway.storage.sqlite import Store


def _enqueue(
    store: Store,
    msg_id: str,
    held: bool = False,
    lease: tuple[str, float] | None = None,
    partner: str = "411329",
) -> None:
    with store.transaction() as db:
        Store.enqueue(
            db,
            msg_id=msg_id,
            case_id="case-1",
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


def test_held_and_leased_messages_are_not_claimed_by_others(tmp_path: Path) -> None:
    store = Store(tmp_path / "gateway.db")
    _enqueue(store, "held", held=True)
    _enqueue(store, "leased", lease=("instance-a", time.time() + 30))
    _enqueue(store, "free")
    assert [m.msg_id for m in store.claim("instance-b", 10, 30)] == ["free"]
    with store.transaction() as db:
        Store.release_hold(db, "case-1")
    assert [m.msg_id for m in store.claim("instance-b", 10, 30)] == ["held"]
    with store.transaction() as db:  # instance-a crashed: its lease runs out
        db.execute("UPDATE outbox SET lease_until = ? WHERE msg_id = 'leased'", (time.time() - 1,))
    assert [m.msg_id for m in store.claim("instance-b", 10, 30)] == ["leased"]
    with store.transaction() as db:
        assert Store.finish(db, "leased")
        assert not Store.finish(db, "leased")  # a second finish changes nothing
    store.close()


def test_a_partner_whose_circuit_is_open_does_not_starve_the_others(tmp_path: Path) -> None:
    """A partner down for a while builds up a backlog of due messages; a claim that skips that
    partner still finds the messages for the others behind it, however long the backlog."""
    store = Store(tmp_path / "gateway.db")
    for number in range(50):
        _enqueue(store, f"down-{number}", partner="411300")
    _enqueue(store, "healthy", partner="429000")
    claimed = store.claim("instance-a", 2, 30, skip_partners={"411300"})
    assert [m.msg_id for m in claimed] == ["healthy"]
    # once its circuit lets messages through again, the backlog goes out oldest first
    assert [m.msg_id for m in store.claim("instance-a", 2, 30)] == ["down-0", "down-1"]
    store.close()


@pytest.mark.asyncio
async def test_group_commit_syncs_the_wal_once_for_what_each_task_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "gateway.db", group_commit=True)
    synced: list[str] = []
    real_sync = store_module._sync_data

    def recording_sync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_sync(fd)

    monkeypatch.setattr(store_module, "_sync_data", recording_sync)

    async def writer(msg_id: str) -> None:
        _enqueue(store, msg_id)
        await store.durable()

    async def reader() -> None:
        await store.durable()  # wrote nothing: nothing to wait for

    await reader()
    assert synced == []
    await asyncio.gather(*(writer(f"m{i}") for i in range(5)), reader())
    assert synced == [str(tmp_path / "gateway.db-wal")]  # five commits, one sync
    await writer("m5")
    assert len(synced) == 2
    other = Store(tmp_path / "gateway.db")  # e.g. the CLI: sees every committed message
    assert len(other.outbox()) == 6
    other.close()
    store.close()


@pytest.mark.asyncio
async def test_without_group_commit_each_commit_is_already_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "gateway.db")
    calls: list[int] = []
    monkeypatch.setattr(store_module, "_sync_data", calls.append)
    _enqueue(store, "m1")
    await store.durable()
    assert calls == []  # synchronous=FULL: SQLite synced inside COMMIT
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def _big_case(n: int, form_bytes: int) -> store_module.CaseRow:
    from datetime import date

    from gateway.core import cases as casecore
    from mappings.examples import bundle_form
    from tests.mapping_helpers import REGISTRY

    form = bundle_form("YJS-YLBX")
    plan = casecore.plan_case(
        REGISTRY, "420607", REGISTRY.bundles["YJS-YLBX"], form, date(2026, 11, 28)
    )
    form["attachment_text"] = "x" * form_bytes  # SAMPLE filler: a large form
    return store_module.CaseRow(
        id=f"case-{n:04d}",
        created=f"2026-11-28T08:{n // 60:02d}:{n % 60:02d}Z",
        updated="2026-11-28T09:00:00Z",
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


def test_a_listing_reads_neither_forms_nor_payloads_and_uses_indexes(tmp_path: Path) -> None:
    import tracemalloc

    store = Store(tmp_path / "gateway.db")
    with store.transaction() as db:
        for n in range(60):
            Store.insert_case(db, _big_case(n, 1 << 20))
    tracemalloc.start()
    page = store.list_cases({}, 50, None)
    matter = page[0].plan[0].matter
    by_matter = store.list_cases({"matter": matter}, 50, None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(page) == len(by_matter) == 50
    assert peak < 4 << 20, peak  # 60 MiB of forms stored; a page reads a few kilobytes each
    assert all(p.payload is None for case in page for p in case.plan)
    plans = {
        query: " ".join(row[3] for row in store.read("EXPLAIN QUERY PLAN " + query, params))
        for query, params in (
            (
                f"SELECT {store_module.SUMMARY_COLUMNS} FROM cases ORDER BY created, id LIMIT 50",
                (),
            ),
            ("SELECT case_id FROM case_matter WHERE matter = ?", (matter,)),
        )
    }
    for plan in plans.values():  # through an index, in its order: no scan, no sort
        assert ("USING INDEX" in plan or "PRIMARY KEY" in plan) and "TEMP B-TREE" not in plan, plan


def test_a_store_made_before_the_matter_index_gets_it_once(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "gateway.db"
    Store(path).close()
    case = _big_case(1, 10)
    with sqlite3.connect(path) as db:  # as an older version wrote it: no routing, no index
        db.execute("DELETE FROM case_matter")
        columns = [r[1] for r in db.execute("PRAGMA table_info(cases)") if r[1] != "routing"]
        db.execute("ALTER TABLE cases DROP COLUMN routing")
        store_module.Store.insert_case  # noqa: B018 - the new writer is not used here
        import orjson

        row = {**case.__dict__, "form": orjson.dumps(case.form)}
        row["plan"], row["states"] = orjson.dumps(case.plan), orjson.dumps(case.states)
        db.execute(
            f"INSERT INTO cases ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row[c] for c in columns],
        )
    store = Store(path)
    listed = store.list_cases({"matter": case.plan[0].matter}, 10, None)
    assert [c.id for c in listed] == [case.id] and listed[0].plan[0].payload is None
