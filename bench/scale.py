"""Beyond one machine: PostgreSQL against SQLite, one worker against two, and a store that grows.

Usage: python bench/scale.py [--seconds S] [--clients N] [--rounds R] [--sizes 10000,1000000]
                             [--smoke]
Every run has the partner simulator in its own process; PostgreSQL is the one on
127.0.0.1:5432 (XGW_BENCH_POSTGRES_URL), in a database made for the run and dropped after.

1. Cases/s of one gateway node on PostgreSQL and on SQLite, --clients windows (256) saturating
   it (closed loop, each refreshing its case every 0.5 s, as bench/e2e.py drives it), rounds
   alternating. 256, not e2e.py's 128: a PostgreSQL commit takes longer than SQLite's, so a
   case is in flight longer, and 128 windows left the PostgreSQL node short of a full core.
   On a machine of two CPUs or more the gateway runs on the first alone and PostgreSQL, the
   simulator and the windows on the others, as in service where the database has its own
   host (--all-cores: all share every CPU). Target: PostgreSQL >= 0.8 of SQLite's.
2. Cases/s with `xgw serve --workers 1` and `--workers 2` (PostgreSQL, the simulator beside),
   each as a ratio to the crypto-only bound of all a case's crypto (ours and the simulator's,
   bench/e2e.py's `crypto_bound`) on the cores in use — the CPUs this machine has, at most
   one per process (workers + simulator); the bound per core measured in this script between
   the runs. Target: the two-worker ratio >= 0.9 of the one-worker ratio.
3. Claim, timeline append and a listing page (what GET /api/v1/cases reads) with 10,000 and
   1,000,000 cases stored (SAMPLE rows written by one SQL statement), against a store of 100
   (the "empty" store, but with full pages to read), on both databases. Target: within 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench._metering import BenchServer, gateway_cpu
from bench.e2e import crypto_bound, drive, steady_rate
from gateway.storage import Store, open_store
from tests.conftest import scratch_database

SMALL = 200  # the reference store: pages' worth by matter too, so every page read is full
ADMIN = os.environ.get("XGW_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def bench_database() -> contextlib.AbstractContextManager[str]:
    """A PostgreSQL database for one measurement, dropped afterwards."""
    return scratch_database(ADMIN, "xgw_bench")


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("postgres"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@contextlib.contextmanager
def postgres_on(cpus: set[int]) -> Iterator[bool]:
    """The local PostgreSQL's processes (and the backends its postmaster forks meanwhile) on
    ``cpus`` only, for the block; False if this process may not move them."""
    everything = set(range(os.cpu_count() or 1))
    try:
        for pid in _postgres_pids():
            os.sched_setaffinity(pid, cpus)
    except (PermissionError, ProcessLookupError):
        yield False
        return
    try:
        yield True
    finally:
        for pid in _postgres_pids():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, everything)


def saturated(
    clients: int,
    seconds: float,
    env: dict[str, str],
    serve_args: tuple[str, ...] = (),
    cpu: int | None = None,
) -> float:
    """Cases/s of one gateway (its simulator in its own process), every window busy;
    ``cpu``: the gateway on that CPU alone."""
    server = BenchServer(separate_simulator=True, extra_env=env, serve_args=serve_args, cpu=cpu)
    try:
        token = server.token()
        asyncio.run(drive(server.url, token, 2, 0.5, 0.01))  # warm up
        outcomes, start, deadline = asyncio.run(drive(server.url, token, clients, seconds, 0.5))
        return steady_rate(outcomes, start, deadline)[0]
    finally:
        server.close()


def databases(args: argparse.Namespace) -> None:
    """The gateway on the first CPU; the simulator, the windows and PostgreSQL on the others
    (as in service, where the database has a host of its own): either way the node's own
    core is what runs out, and the comparison is what each store costs the node."""
    sqlite, postgres = [], []
    gateway_on = gateway_cpu(args.all_cores)
    others = set(os.sched_getaffinity(0))
    with postgres_on(others) if gateway_on is not None else contextlib.nullcontext(False) as moved:
        if gateway_on is not None and not moved:
            print("  (PostgreSQL could not be moved off the gateway's CPU: it shares it)")
        for _ in range(args.rounds):
            sqlite.append(saturated(args.clients, args.seconds, {}, cpu=gateway_on))
            with bench_database() as url:
                postgres.append(
                    saturated(args.clients, args.seconds, {"XGW_DATABASE_URL": url}, cpu=gateway_on)
                )
            print(
                f"  round: SQLite {sqlite[-1]:.1f} cases/s, PostgreSQL {postgres[-1]:.1f} cases/s"
            )
    os.sched_setaffinity(0, others | ({gateway_on} if gateway_on is not None else set()))
    ratio = statistics.median(postgres) / statistics.median(sqlite)
    print(
        f"1. one node: SQLite {statistics.median(sqlite):.1f} cases/s, PostgreSQL "
        f"{statistics.median(postgres):.1f} cases/s (medians of {args.rounds}): "
        f"PostgreSQL/SQLite {ratio:.2f} (target >= 0.8)"
    )


def workers(args: argparse.Namespace) -> None:
    cpus = len(os.sched_getaffinity(0))
    bounds = [crypto_bound(args.bound_seconds)[0]]
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for count in (1, 2):
            with bench_database() as url:
                rates[count].append(
                    saturated(
                        args.clients,
                        args.seconds,
                        {"XGW_DATABASE_URL": url},
                        ("--workers", str(count)),
                    )
                )
            bounds.append(crypto_bound(args.bound_seconds)[0])
    per_core = statistics.median(bounds)
    ratios = {}
    for count, measured in rates.items():
        cores = min(cpus, count + 1)  # the workers and the simulator, one core each at most
        ratios[count] = statistics.median(measured) / (per_core * cores)
        print(
            f"2. {count} worker(s): {statistics.median(measured):.1f} cases/s on {cores} "
            f"core(s); crypto-only bound {per_core:.1f} cases/s a core: ratio {ratios[count]:.3f}"
        )
    print(
        f"   two workers' ratio / one worker's: {ratios[2] / ratios[1]:.2f} (target >= 0.9; "
        f"{cpus} CPUs here)"
    )


async def fill(store: Store, count: int) -> None:
    """``count`` SAMPLE cases, each with a delivered message and a timeline step, written by
    the database itself (one statement per table: a million rows in seconds, not hours)."""
    if not count:
        return
    postgres = store.lock_clause != ""  # PostgreSQL writes bytes as '\\x…', SQLite as X'…'

    def blob(value: bytes) -> str:
        return f"'\\x{value.hex()}'::bytea" if postgres else f"X'{value.hex()}'"

    empty_object, empty_list = blob(b"{}"), blob(b"[]")
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})"
    created = "'2026-06-01T00:00:00.' || CAST(1000000000 + i AS TEXT) || 'Z'"
    case_id = "'bench-' || CAST(i AS TEXT)"
    statements = [
        f"{numbers} INSERT INTO cases (id, created, updated, status, hall, clerk, token_name, "
        "bundle, title, filed_on, idem_key, request_hash, person, form, plan, states, version, "
        f"routing) SELECT {case_id}, {created}, {created}, 'done', 'hall', NULL, 'bench', "
        "'YJS-SBZR', 'SAMPLE', '2026-06-01', 'bench-key-' || CAST(i AS TEXT), 'h', NULL, "
        f"{empty_object}, {empty_list}, {empty_list}, 1, {empty_list} FROM n",
        f"{numbers} INSERT INTO case_matter (matter, created, case_id) SELECT "
        f"'M' || CAST(i % 2 AS TEXT), {created}, {case_id} FROM n",
        f"{numbers} INSERT INTO timeline (case_id, seq, time, step, sub_id, detail) SELECT "
        f"{case_id}, 1, {created}, 'filed', NULL, NULL FROM n",
        f"{numbers} INSERT INTO outbox (msg_id, case_id, sub_id, partner, domain, kind, matter, "
        "payload, envelope, status, attempts, created, next_attempt_at, finished_at) SELECT "
        f"'bench-m-' || CAST(i AS TEXT), {case_id}, 's1', '411329', 'si', 'request', 'M', "
        f"{empty_object}, {empty_object}, 'delivered', 1, i, i, i FROM n",
    ]
    async with store.transaction() as tx:
        for statement in statements:
            await tx.db.execute(statement)


async def operation_ms(store: Store, repeats: int) -> dict[str, float]:
    """Median ms of: a claim of one due message, a timeline step appended to a case, and the
    first page of 50 cases (no filter, and by matter)."""
    times: dict[str, list[float]] = {"claim": [], "append": [], "page": [], "page by matter": []}

    async def timed(name: str, work: Callable[[], Awaitable[object]]) -> None:
        began = time.perf_counter()
        await work()
        times[name].append((time.perf_counter() - began) * 1000)

    for _ in range(repeats):
        async with store.transaction() as tx:
            await tx.enqueue(
                msg_id=f"probe-{uuid.uuid4().hex}",
                case_id="probe",
                sub_id="s",
                partner="411329",
                domain="si",
                kind="request",
                matter="M",
                payload=b"{}",
                envelope=b"{}",
            )
        await timed("claim", lambda: store.claim("bench", 1, 30, dead_after=6))

        async def append() -> None:
            async with store.transaction() as tx:
                await tx.add_step("bench-1", "probe")

        await timed("append", append)
        await timed("page", lambda: store.list_cases({}, 51, None))
        await timed("page by matter", lambda: store.list_cases({"matter": "M1"}, 51, None))
    return {name: statistics.median(values) for name, values in times.items()}


async def growth_on(url: str, sizes: list[int], repeats: int) -> dict[int, dict[str, float]]:
    results = {}
    store = await open_store(url)
    try:
        stored = 0
        for size in [SMALL, *sizes]:
            await fill_more(store, stored, size)
            stored = size
            if size == SMALL:  # warm up: the first timings of a fresh connection run slow
                await operation_ms(store, repeats)
            results[size] = await operation_ms(store, repeats)
    finally:
        await store.close()
    return results


async def fill_more(store: Store, stored: int, size: int) -> None:
    if size > stored:
        began = time.perf_counter()
        async with store.transaction() as tx:  # start again from empty: one fill statement
            for table in ("cases", "case_matter", "timeline", "outbox"):
                await tx.db.execute(f"DELETE FROM {table} WHERE 1 = 1")
        await fill(store, size)
        async with store.transaction() as tx:  # the statistics a store grown by use has
            await tx.db.execute("ANALYZE")
        print(f"   ({size:,} cases written in {time.perf_counter() - began:.1f} s)")


def growth(args: argparse.Namespace, folder: Path) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    for name in ("SQLite", "PostgreSQL"):
        if name == "SQLite":
            results = asyncio.run(
                growth_on(f"sqlite:///{folder / 'growth.sqlite3'}", sizes, args.repeats)
            )
        else:
            with bench_database() as url:
                results = asyncio.run(growth_on(url, sizes, args.repeats))
        empty = results[SMALL]
        for size in sizes:
            line = ", ".join(
                f"{op} {ms:.2f} ms ({ms / empty[op]:.2f}x)" for op, ms in results[size].items()
            )
            print(f"3. {name}, {size:,} cases: {line} (target <= 2x the small store's)")
        print(
            f"   {name}, small store ({SMALL} cases): "
            + ", ".join(f"{op} {ms:.2f} ms" for op, ms in empty.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--bound-seconds", type=float, default=2.0)
    parser.add_argument(
        "--all-cores",
        action="store_true",
        help="part 1 unpinned: the gateway, PostgreSQL, the simulator and the windows share "
        "every CPU (on a small machine PostgreSQL's own work then takes the node's CPU)",
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", choices=("databases", "workers", "growth"))
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.rounds = 1.0, 2, 1
        args.sizes, args.repeats, args.bound_seconds = "1000", 5, 0.2
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "databases"):
            databases(args)
        if args.only in (None, "workers"):
            workers(args)
        if args.only in (None, "growth"):
            growth(args, Path(folder))
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    main()
