"""Exchange-log speed: durable appends (group commit), verification rate, a year's volume.

Usage: python bench/audit.py [--entries N] [--smoke]
Targets (one core): append >= 5,000 entries/s durably; verify >= 100,000 entries/s;
1.57 million entries (a year of the article's exchange volume) verified in < 30 s.
Reference in the same run: SQLite inserting the same rows with no hashing (the storage floor),
and SM3 over the same bodies (the hashing floor). Verification's memory: the peak RSS of a
process verifying the year's log against one verifying the small append log — flat in the
log's size when verification streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audit.log import AuditEvent, AuditLog, AuditWriter
from gateway.audit.verify import KnownKey, verify_log
from security.auditchain import merkle_root
from security.backend import CryptoBackend, get_backend
from security.digest import sm3
from security.keys import PrivateKey, generate_private_key


def event(i: int, envelope_bytes: int) -> AuditEvent:
    return AuditEvent(
        "message.sent",
        "outbound",
        "delivered",
        case_id=f"case-{i // 4}",
        message_id=f"msg-{i}",
        partner="411329",
        local_matter="XZ-SB-001",
        partner_matter="XY-SB-001",
        actor="window-07",
        person_id="411329198506150034",
        envelope={"v": "XGW-ENV/1", "ciphertext": "A" * envelope_bytes} if envelope_bytes else None,
    )


async def durable_appends(
    log: AuditLog, key: PrivateKey, backend: CryptoBackend, count: int, clients: int
) -> float:
    writer = AuditWriter(log, lambda: key, backend, every_entries=1000, every_seconds=60)
    writer.start()
    start = time.perf_counter()
    per_client = count // clients

    async def client(n: int) -> None:
        for i in range(per_client):
            await writer.append(event(n * per_client + i, 0))

    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - start
    await writer.close()
    return clients * per_client / elapsed


# A verifier process of its own, as an auditor runs one: its peak RSS (KiB) is what it needed.
VERIFIER = """
import resource, sys
from pathlib import Path
from gateway.audit.log import AuditLog
from gateway.audit.verify import KnownKey, verify_log
from security.backend import get_backend
log = AuditLog(Path(sys.argv[1]), "bench-1", b"k" * 32)
keys = [KnownKey(sys.argv[2], bytes.fromhex(sys.argv[3]), None, None, "")]
result = verify_log(log, keys, get_backend("native"), unsigned_tail_limit=None)
print(int(result.ok), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def verifier_peak_mib(path: Path, key: PrivateKey) -> float:
    done = subprocess.run(
        [sys.executable, "-c", VERIFIER, str(path), key.key_id, key.public.point.hex()],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    ok, peak_kib = done.stdout.split()
    assert ok == "1", done.stdout
    return int(peak_kib) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_570_000, help="entries for the year run")
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--envelope-bytes", type=int, default=0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.entries, args.appends, args.clients = 3_000, 1_000, 8
    backend = get_backend("native")
    key = generate_private_key(backend)
    keys = [KnownKey(key.key_id, key.public.point, None, None, "")]

    with tempfile.TemporaryDirectory(dir=".") as scratch:
        folder = Path(scratch)
        log = AuditLog(folder / "append.sqlite3", "bench-1", b"k" * 32)
        append_rate = asyncio.run(durable_appends(log, key, backend, args.appends, args.clients))
        bodies = [r[1] for r in log.rows("bench-1")]
        log.close()

        floor_db = sqlite3.connect(folder / "floor.sqlite3", isolation_level=None)
        floor_db.execute("PRAGMA journal_mode=WAL")
        floor_db.execute("PRAGMA synchronous=FULL")
        floor_db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB)")
        start = time.perf_counter()
        batch = 64
        for offset in range(0, len(bodies), batch):  # same batching, no hashing, no chain
            floor_db.execute("BEGIN")
            floor_db.executemany(
                "INSERT INTO t (body) VALUES (?)", [(b,) for b in bodies[offset : offset + batch]]
            )
            floor_db.execute("COMMIT")
        floor_rate = len(bodies) / (time.perf_counter() - start)
        floor_db.close()

        year = AuditLog(folder / "year.sqlite3", "bench-1", b"k" * 32)
        start = time.perf_counter()
        chunk = 10_000
        for offset in range(0, args.entries, chunk):
            year.append_many(
                [
                    event(i, args.envelope_bytes)
                    for i in range(offset, min(offset + chunk, args.entries))
                ]
            )
        fill_seconds = time.perf_counter() - start
        # checkpoints every 1,000 entries, as configured by default
        signed = 0
        while year.unsigned_count():
            year.checkpoint(key, backend, (1000, 60.0), limit=1000)
            signed += 1
        start = time.perf_counter()
        result = verify_log(year, keys, backend, unsigned_tail_limit=None)
        verify_seconds = time.perf_counter() - start
        assert result.ok, [str(f) for f in result.all_findings()][:5]
        workers = os.cpu_count() or 1
        start = time.perf_counter()
        result = verify_log(
            year, keys, backend, unsigned_tail_limit=None, workers=workers,
            segment_entries=1000 if args.smoke else None,
        )  # fmt: skip
        parallel_seconds = time.perf_counter() - start
        assert result.ok, [str(f) for f in result.all_findings()][:5]
        hash_start = time.perf_counter()
        for body in bodies:
            sm3(body)
        hash_rate = len(bodies) / (time.perf_counter() - hash_start)
        # The hashing an entry needs: its body's SM3 and its share of a checkpoint's Merkle tree.
        start = time.perf_counter()
        for offset in range(0, len(bodies), 1000):
            merkle_root([sm3(body).hex() for body in bodies[offset : offset + 1000]])
        hashing_rate = len(bodies) / (time.perf_counter() - start)
        # What no verifier of this store can beat: reading its rows, then also hashing them.
        start = time.perf_counter()
        for _row in year.rows("bench-1"):
            pass
        read_rate = args.entries / (time.perf_counter() - start)
        start = time.perf_counter()
        for row in year.rows("bench-1"):
            sm3(row[1])
        read_hash_rate = args.entries / (time.perf_counter() - start)
        # ...and what every entry needs besides, before any check is made: its body parsed (the
        # links, seq, node and indexed columns are inside it) and its hash in a Merkle root.
        start = time.perf_counter()
        batch_hashes: list[str] = []
        for row in year.rows("bench-1"):
            batch_hashes.append(sm3(row[1]).hex())
            orjson.loads(row[1])
            if len(batch_hashes) == 1000:  # the checkpoints' batches, as filled above
                merkle_root(batch_hashes)
                batch_hashes = []
        required_rate = args.entries / (time.perf_counter() - start)
        year.close()
        small_peak = verifier_peak_mib(folder / "append.sqlite3", key)
        year_peak = verifier_peak_mib(folder / "year.sqlite3", key)

    verify_rate = args.entries / verify_seconds
    print(f"{'measure':46}  {'value':>12}  {'reference':>12}  {'ratio':>6}")
    print(
        f"{'durable appends/s (group commit, ' + str(args.clients) + ' clients)':46}  {append_rate:12.0f}  {floor_rate:12.0f}  {append_rate / floor_rate:6.2f}  (ref: plain SQLite inserts, same batching)"
    )
    print(
        f"{'verify entries/s':46}  {verify_rate:12.0f}  {hash_rate:12.0f}  {verify_rate / hash_rate:6.2f}  (ref: SM3 alone over the bodies)"
    )
    print(
        f"{'verify ' + format(args.entries, ',') + ' entries (s)':46}  {verify_seconds:12.1f}  {'30 (target)':>12}"
    )
    parallel_rate = args.entries / parallel_seconds
    print(
        f"{'verify entries/s, ' + str(workers) + ' processes (segments)':46}  {parallel_rate:12.0f}  {verify_rate:12.0f}  {parallel_rate / verify_rate:6.2f}  (ref: one process, above)"
    )
    print(
        f"{'  the same, a core against SM3 alone':46}  {parallel_rate / workers:12.0f}  {hash_rate:12.0f}  {parallel_rate / workers / hash_rate:6.2f}  (target >= 0.6)"
    )
    print(
        f"{'  SM3 of each body and the Merkle roots alone':46}  {hashing_rate:12.0f}  {hash_rate:12.0f}  {hashing_rate / hash_rate:6.2f}  (the hashing each entry needs, nothing read)"
    )
    print(
        f"{'  reading the rows alone (one process)':46}  {read_rate:12.0f}  {hash_rate:12.0f}  {read_rate / hash_rate:6.2f}  (the store's floor)"
    )
    print(
        f"{'  reading them and SM3 of each body':46}  {read_hash_rate:12.0f}  {hash_rate:12.0f}  {read_hash_rate / hash_rate:6.2f}  (no verifier of this store passes it)"
    )
    print(
        f"{'  + parsing each body, the Merkle roots':46}  {required_rate:12.0f}  {hash_rate:12.0f}  {required_rate / hash_rate:6.2f}  (each entry's work before any check: the ceiling)"
    )
    print(
        f"{'  1.57 M entries at that rate (s)':46}  {1_570_000 / parallel_rate:12.1f}  {'10 (target)':>12}"
    )
    print(
        f"{'verifier peak RSS, MiB (' + format(args.entries, ',') + ' entries)':46}  {year_peak:12.1f}  {small_peak:12.1f}  {year_peak / small_peak:6.2f}  (ref: the same verifier over {len(bodies):,} entries)"
    )
    print(f"(filled in {fill_seconds:.1f}s; {signed} checkpoints)")
    print(
        "targets: append >= 5,000/s durably; verify >= 100,000/s; 1.57 M entries < 30 s "
        "(one process), < 10 s using every core"
    )
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
