"""Which PostgreSQL driver: asyncpg against psycopg 3 (async), on the store's own kind of work.

Usage: python bench/store_drivers.py [--transactions 3000] [--concurrency 20] [--smoke]
Each driver runs the same transaction as a case change does — read a row FOR UPDATE, insert a
timeline step numbered after the last, update the row over its version — one after another
and then ``--concurrency`` at a time, on a pool of 10 connections, against a database made
for the run on 127.0.0.1:5432 (XGW_BENCH_POSTGRES_URL) and dropped after. Prints transactions
a second for each and asyncpg's ratio to psycopg's (the reference, measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import psycopg
import psycopg_pool

from tests.conftest import scratch_database

ADMIN = os.environ.get("XGW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEMA = (
    "CREATE TABLE cases (id TEXT PRIMARY KEY, version INTEGER NOT NULL, states BYTEA)",
    "CREATE TABLE timeline (case_id TEXT, seq INTEGER, step TEXT, detail BYTEA, "
    "PRIMARY KEY (case_id, seq))",
)
CASES = 200  # rows the transactions spread over
DETAIL = b'{"partner": "411329", "matter": "M", "message_id": "' + b"x" * 64 + b'"}'


async def with_asyncpg(url: str, count: int, concurrency: int) -> float:
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)

    async def one(n: int) -> None:
        case_id = f"c{n % CASES}"
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT version FROM cases WHERE id = $1 FOR UPDATE", case_id)
            await conn.execute(
                "INSERT INTO timeline VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM "
                "timeline WHERE case_id = $1), $2, $3)",
                case_id,
                "queued",
                DETAIL,
            )
            await conn.execute(
                "UPDATE cases SET version = version + 1, states = $1 WHERE id = $2 AND version = $3",
                DETAIL,
                case_id,
                row["version"],
            )

    try:
        return await _timed(one, count, concurrency)
    finally:
        await pool.close()


async def with_psycopg(url: str, count: int, concurrency: int) -> float:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=10, max_size=10, open=False)
    await pool.open()

    async def one(n: int) -> None:
        case_id = f"c{n % CASES}"
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT version FROM cases WHERE id = %s FOR UPDATE", (case_id,)
            )
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute(
                "INSERT INTO timeline VALUES (%s, (SELECT COALESCE(MAX(seq), 0) + 1 FROM "
                "timeline WHERE case_id = %s), %s, %s)",
                (case_id, case_id, "queued", DETAIL),
            )
            await conn.execute(
                "UPDATE cases SET version = version + 1, states = %s WHERE id = %s AND version = %s",
                (DETAIL, case_id, row[0]),
            )

    try:
        return await _timed(one, count, concurrency)
    finally:
        await pool.close()


async def _timed(one: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> float:
    began = time.perf_counter()
    if concurrency == 1:
        for n in range(count):
            await one(n)
    else:
        queue = iter(range(count))

        async def worker() -> None:
            for n in queue:
                await one(n)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - began)


async def _reset(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS cases, timeline")
        for statement in SCHEMA:
            await conn.execute(statement)
        await conn.executemany(
            "INSERT INTO cases VALUES ($1, 1, NULL)", [(f"c{n}",) for n in range(CASES)]
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    count = 100 if args.smoke else args.transactions
    with scratch_database(ADMIN, "xgw_bench") as url:
        asyncio.run(compare(url, count, args.concurrency))
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


async def compare(url: str, count: int, concurrency_most: int) -> None:
    results: dict[tuple[str, int], float] = {}
    for concurrency in (1, concurrency_most):
        # alternating, each on fresh tables, so neither driver gets the warmer database
        for driver, run in (("psycopg", with_psycopg), ("asyncpg", with_asyncpg)):
            await _reset(url)
            results[driver, concurrency] = await run(url, count, concurrency)
        ratio = results["asyncpg", concurrency] / results["psycopg", concurrency]
        print(
            f"{concurrency:>3} at a time: asyncpg {results['asyncpg', concurrency]:,.0f} tx/s, "
            f"psycopg {results['psycopg', concurrency]:,.0f} tx/s "
            f"(asyncpg/psycopg {ratio:.2f}; psycopg {psycopg.__version__}, "
            f"asyncpg {asyncpg.__version__})"
        )


if __name__ == "__main__":
    main()
