"""The durable store's outbox and group commit, against a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway import store as store_module
from gateway.store import Store


def _enqueue(
    store: Store,
    msg_id: str,
    held: bool = False,
    lease: tuple[str, float] | None = None,
    partner: str = "411329",
) -> None:
    with store.transaction() as db:
        Store.enqueue(
            db, msg_id, "case-1", "sub", partner, "si", "request", "M", b"{}", b"{}", held, lease
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
