"""What a node remembers, outside its exchange log, of the last checkpoint it signed.

Someone with write access to the log alone could delete its newest checkpoints, rewrite the
entries after the one before, and let the gateway sign the rewrite as a new batch. The node
therefore keeps (to_seq, hash) of the last checkpoint it signed where the log's writer cannot
reach it with the same access: a small file beside its keys, and, when configured, Redis
(shared by the nodes, so a node rebuilt on another host still knows). Before signing, and at
start, the log must still hold that checkpoint unchanged (``AuditLog.check_extends``).

The file is left out of backups (``gateway.storage.backup``): a restored log is older than the
file would be, and a restore is a deliberate rollback that starts a new memory — which the
partners who witnessed the newer checkpoints still contradict (docs/exchange-log.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from gateway.logs import get_logger

log = get_logger("gateway.audit.memory")

SUFFIX = ".signed-head"  # backups skip files ending so


class SignedHeadMemory:
    def __init__(self, folder: Path, node: str, redis: Any | None = None) -> None:
        self.path = folder / f"audit-{node}{SUFFIX}"
        self.node, self.redis = node, redis
        self._redis_key = f"xgw:audit:signed-head:{node}"

    async def recall(self) -> tuple[int, str] | None:
        """The furthest of what the file and Redis remember (None: this node signed nothing
        yet, or has no memory of it). A Redis that does not answer is an error: signing
        without the check is what this prevents."""
        found = [await asyncio.to_thread(self._read_file)]
        if self.redis is not None:
            found.append(_parse(await self.redis.get(self._redis_key)))
        known = [f for f in found if f is not None]
        return max(known) if known else None

    async def remember(self, to_seq: int, checkpoint_hash: str) -> None:
        """After the checkpoint is committed: a crash in between leaves the memory behind the
        log, which the log still extends."""
        current = await asyncio.to_thread(self._read_file)
        if current is None or current[0] < to_seq:
            await asyncio.to_thread(self._write_file, to_seq, checkpoint_hash)
        if self.redis is not None:
            stored = _parse(await self.redis.get(self._redis_key))
            if stored is None or stored[0] < to_seq:
                await self.redis.set(self._redis_key, f"{to_seq} {checkpoint_hash}".encode())

    async def forget(self) -> None:
        """An operator accepted a rollback: remember from the log's next checkpoint on."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.redis is not None:
            await self.redis.delete(self._redis_key)

    def _read_file(self) -> tuple[int, str] | None:
        try:
            data = orjson.loads(self.path.read_bytes())
            return int(data["to_seq"]), str(data["checkpoint"])
        except FileNotFoundError:
            return None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # a damaged memory is no memory; the check then rests on Redis and the witnesses
            log.error("audit.signed_head_unreadable", file=str(self.path))
            return None

    def _write_file(self, to_seq: int, checkpoint_hash: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(self.path.name + ".part")
        data = orjson.dumps({"node": self.node, "to_seq": to_seq, "checkpoint": checkpoint_hash})
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)


def _parse(value: bytes | None) -> tuple[int, str] | None:
    if value is None:
        return None
    try:
        to_seq, checkpoint_hash = value.decode().split(" ", 1)
        return int(to_seq), checkpoint_hash
    except (UnicodeDecodeError, ValueError):
        return None
