"""Where the gateway keeps cases, the outbox, inbound records and tokens.

``open_store(url)`` gives a ``Store``: SQLite (``sqlite:///path``, the embedded default) or
PostgreSQL (``postgresql://…``, several nodes). Nothing outside this package speaks SQL or
imports a database driver; callers see ``records`` and the store's own errors.
"""

from __future__ import annotations

from pathlib import Path

from gateway.storage.base import Store, Transaction
from gateway.storage.records import (
    RECORD_TIMES,
    AlreadyThere,
    CaseRow,
    CaseSummary,
    Conflict,
    ExchangeRecord,
    InboundCase,
    Increment,
    MaterialRecord,
    NewCase,
    OutboxMessage,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    Token,
    epoch_of,
    iso_of,
)
from security.atrest import DataKeys

__all__ = [
    "RECORD_TIMES",
    "AlreadyThere",
    "CaseRow",
    "CaseSummary",
    "Conflict",
    "ExchangeRecord",
    "InboundCase",
    "Increment",
    "MaterialRecord",
    "NewCase",
    "OutboxMessage",
    "SchemaTooNew",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Token",
    "Transaction",
    "epoch_of",
    "iso_of",
    "open_store",
    "sqlite_path",
]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///…`` URL (None for another database)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


async def open_store(
    url: str,
    *,
    group_commit: bool = False,
    data_keys: DataKeys | None = None,
    pool_size: int = 10,
    migrate: bool = True,
) -> Store:
    """The store at ``url``, its schema brought up to date (``migrate``: what the gateway
    does as it starts, so that the embedded default needs no ``xgw db migrate``); a schema
    newer than this code's is ``SchemaTooNew`` either way. ``group_commit``: see
    ``gateway.storage.sqlite``."""
    path = sqlite_path(url)
    if path is not None:
        from gateway.storage.sqlite import SqliteStore

        return SqliteStore(path, group_commit=group_commit, data_keys=data_keys, migrate=migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.storage.postgres import PostgresStore

        return await PostgresStore.open(url, data_keys, pool_size=pool_size, migrate=migrate)
    raise StoreError("database_url must start with sqlite:/// or postgresql://")
