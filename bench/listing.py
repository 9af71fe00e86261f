"""Case listings as the store grows: a page of 50, unfiltered and by matter, through indexes.

Usage: python bench/listing.py [--sizes 10000,100000] [--smoke]
Target: a page's time at each size within 2x of a small store's (1,000 cases), and its memory
flat (listings read neither forms nor payloads). Reference in the same run: the same page read
from the small store. Cases are SAMPLE data written straight into a temporary store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.storage import Store, open_store
from tests.test_store import FILED_AT
from tests.test_store import _case as _big_case

YEAR = 365 * 86400


async def fill(store: Store, count: int, form_bytes: int) -> None:
    template = _big_case(0, form_bytes)
    batch = 1000
    for start in range(0, count, batch):
        async with store.transaction() as tx:
            for n in range(start, min(count, start + batch)):
                case = replace(
                    template,
                    id=f"case-{n:07d}",
                    created=FILED_AT - (n * 7919) % YEAR,  # spread over a year
                    idem_key=f"key-{n}",
                )
                await tx.insert_case(case)
        print(f"  filled {min(count, start + batch):,}/{count:,}", end="\r", file=sys.stderr)
    print(file=sys.stderr)


async def page_seconds(store: Store, where: dict[str, str], repeats: int) -> tuple[float, int]:
    times = []
    tracemalloc.start()
    for _ in range(repeats):
        began = time.perf_counter()
        page = await store.list_cases(where, 50, None)
        times.append(time.perf_counter() - began)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(page) == 50
    return statistics.median(times), peak


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--form-bytes", type=int, default=20_000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [2000] if args.smoke else [int(s) for s in args.sizes.split(",")]
    repeats = 5 if args.smoke else 50
    matter = _big_case(0, 0).plan[0].matter
    with tempfile.TemporaryDirectory() as folder:
        small = await open_store(f"sqlite:///{Path(folder) / 'small.db'}")
        await fill(small, 1000, args.form_bytes)
        reference = {
            name: await page_seconds(small, where, repeats)
            for name, where in (("all", {}), ("matter", {"matter": matter}))
        }
        print(
            f"reference, 1,000 cases: page of 50 {reference['all'][0] * 1000:.2f} ms, "
            f"by matter {reference['matter'][0] * 1000:.2f} ms"
        )
        for size in sizes:
            store = await open_store(f"sqlite:///{Path(folder) / f'{size}.db'}")
            await fill(store, size, args.form_bytes)
            for name, where in (("all", {}), ("matter", {"matter": matter})):
                seconds, peak = await page_seconds(store, where, repeats)
                ratio = seconds / reference[name][0]
                print(
                    f"{size:>9,} cases, {name:<6}: {seconds * 1000:.2f} ms a page "
                    f"({ratio:.2f}x the small store's; target <= 2), peak {peak / 1024:.0f} KiB"
                )
            await store.close()
        await small.close()
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    asyncio.run(main())
