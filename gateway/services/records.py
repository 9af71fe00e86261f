"""Operational records of exchanges, written in batches (``xgw_…`` metrics count; these say
when each exchange passed this node, how big it was and how it ended, for a time range)."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.logs import get_logger
from gateway.storage import ExchangeRecord, Store

log = get_logger("gateway.services.records")


class Recorder:
    """Collects records and writes them every ``every`` seconds in one volatile write: an
    exchange costs no write of its own. A batch that cannot be written (the database away) is
    kept for the next turn, up to ``keep`` records; past that the oldest are dropped with a log
    line — the records are for operators, the exchange log is the evidence."""

    def __init__(self, store: Store, every: float = 1.0, keep: int = 50_000) -> None:
        self.store, self.every, self.keep = store, every, keep
        self._pending: list[ExchangeRecord] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, record: ExchangeRecord) -> None:
        self._pending.append(record)
        if len(self._pending) > self.keep:
            dropped = len(self._pending) - self.keep
            del self._pending[:dropped]
            log.warning("records.dropped", records=dropped)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="exchange-records")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self.store.record_exchanges(batch)
        except Exception as exc:  # kept for the next turn; the loop goes on
            self._pending[:0] = batch
            log.warning("records.not_written", records=len(batch), error_type=type(exc).__name__)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
