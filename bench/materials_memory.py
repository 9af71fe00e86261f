"""The gateway's memory while materials travel: one material of 1, 20 and 100 MiB from the
window's upload to the partner's receipt, and many cases with materials in flight at once.

Usage: python bench/materials_memory.py [--sizes 1,20,100] [--cases 100] [--latency-ms 3000] [--smoke]
Targets (#22):
- one material: the gateway's peak RSS grows by at most 3 x the chunk size (64 KiB) plus a fixed
  amount, not by the material's size. Printed: each size's growth over the RSS before its
  filing, and the growth beyond the smallest size's (the fixed amount), against 3 chunks;
- 100 cases, each with 3 x 5 MiB materials, in flight at once (the partner answering in
  --latency-ms): RSS stays under 300 MiB. Reference in the same run: the RSS before.
Real processes: the gateway (SQLite, embedded defaults) and the simulator in its own process,
which opens and checks every material (so the figures are the gateway's alone). Upload in
256 KiB pieces over HTTP, multipart as a window sends it. Materials are random bytes behind a
PDF header (SAMPLE); the catalogue's limits are raised for the run (a copy of the SAMPLE data).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._metering import rss_mib
from mappings.examples import sample_filing
from mappings.registry import packaged_data_dir
from security.stream import CHUNK_BYTES
from tests.harness import Deployment

PIECE = 256 * 1024
CODES = ("invoices", "discharge-summary", "cost-list")  # 医疗费用报销's three materials


class Peak(threading.Thread):
    """A process's RSS every 20 ms; the highest kept."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (OSError, RuntimeError):  # the process ended
                return
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak


async def material(size: int) -> AsyncIterator[bytes]:
    """A SAMPLE PDF of ``size`` bytes, made as it is sent (the client holds a piece at a time)."""
    head = b"%PDF-1.7\n% SAMPLE\n"
    yield head
    left = size - len(head)
    while left > 0:
        piece = os.urandom(min(PIECE, left))
        left -= len(piece)
        yield piece


async def file_case(
    http: aiohttp.ClientSession, url: str, token: str, sizes: dict[str, int]
) -> str:
    filing = {**sample_filing("YJS-YLBX"), "licences": []}
    with aiohttp.MultipartWriter("form-data") as writer:
        part = writer.append(orjson.dumps(filing), {"Content-Type": "application/json"})
        part.set_content_disposition("form-data", name="case")
        for code, size in sizes.items():
            part = writer.append_payload(
                aiohttp.payload.AsyncIterablePayload(material(size))  # type: ignore[attr-defined]
            )
            part.set_content_disposition("form-data", name=code, filename=f"{code}.pdf")
    async with http.post(
        f"{url}/api/v1/cases",
        data=writer,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    ) as answer:
        body = await answer.json()
        assert answer.status == 201, (answer.status, body)
        return str(body["id"])


async def wait_done(http: aiohttp.ClientSession, url: str, token: str, ids: list[str]) -> None:
    pending, started = set(ids), time.monotonic()
    while pending:
        if time.monotonic() - started > 600:
            raise SystemExit(f"{len(pending)} cases not done within 600 s")
        for case_id in list(pending):
            async with http.get(
                f"{url}/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {token}"}
            ) as answer:
                case = await answer.json()
                if case["status"] == "done":
                    pending.discard(case_id)
                elif case["status"] == "attention":
                    codes = [s["error_code"] for s in case["sub_matters"] if s["error_code"]]
                    raise SystemExit(f"case {case_id} needs attention: {codes}")
        await asyncio.sleep(0.2)


async def one_material(url: str, token: str, size: int) -> None:
    async with aiohttp.ClientSession() as http:
        case_id = await file_case(http, url, token, {"invoices": size})
        await wait_done(http, url, token, [case_id])


async def many(url: str, token: str, cases: int, size: int) -> None:
    gate = asyncio.Semaphore(16)  # windows uploading at once

    async def one(http: aiohttp.ClientSession) -> str:
        async with gate:
            return await file_case(http, url, token, dict.fromkeys(CODES, size))

    async with aiohttp.ClientSession() as http:
        ids = await asyncio.gather(*(one(http) for _ in range(cases)))
        await wait_done(http, url, token, list(ids))


def deploy(folder: Path, largest_mib: int) -> Deployment:
    data = folder / "mappings"
    shutil.copytree(packaged_data_dir(), data)
    path = data / "materials" / "420607.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for items in document["materials"].values():
        for item in items:
            item["max_mib"] = max(largest_mib + 1, 20)
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    limit = (largest_mib + 1) * 1024 * 1024
    deployment = Deployment(
        folder,
        separate_simulator=True,
        extra_env={
            "XGW_MAPPINGS_DIR": str(data),
            "XGW_MAX_MATERIAL_BYTES": str(limit),
            "XGW_MAX_CASE_MATERIAL_BYTES": str(3 * limit),
            "XGW_DELIVERY_LEASE_SECONDS": "60",
        },
    )
    deployment.configure_partner(
        "411329", max_concurrency=256, rate_limit_per_minute=1_000_000, timeout_seconds=25
    )
    return deployment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20,100", help="MiB, one material each")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=3000)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [1, 2] if args.smoke else [int(s) for s in args.sizes.split(",")]
    cases, each, latency = (
        (3, 256 * 1024, 100) if args.smoke else (args.cases, 5 << 20, args.latency_ms)
    )
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("XGW_BENCH_DIR")) as folder:
        deployment = deploy(Path(folder), max(sizes))
        try:
            gateway = deployment.gateways[0]
            assert gateway.proc is not None
            pid = gateway.proc.pid
            asyncio.run(one_material(deployment.url, deployment.token, 64 * 1024))  # warm-up
            for mib in sizes:
                before = rss_mib(pid)
                peak = Peak(pid)
                peak.start()
                began = time.monotonic()
                asyncio.run(one_material(deployment.url, deployment.token, mib << 20))
                took = time.monotonic() - began
                rows.append((mib, before, peak.stop(), took))
            deployment.faults({"*": {"latency_ms": latency}})
            before = rss_mib(pid)
            peak = Peak(pid)
            peak.start()
            began = time.monotonic()
            asyncio.run(many(deployment.url, deployment.token, cases, each))
            took_many = time.monotonic() - began
            peak_many = peak.stop()
            stats = deployment.stats()["411329"]
        finally:
            deployment.close()
    chunk_mib = CHUNK_BYTES / 2**20
    print(
        f"{'one material, upload to receipt':34}  {'RSS before':>10}  {'peak':>7}  {'growth':>7}  {'seconds':>7}"
    )
    for mib, before, top, took in rows:
        print(
            f"{format(mib, ',') + ' MiB':34}  {before:10.1f}  {top:7.1f}  {top - before:7.1f}  {took:7.1f}"
        )
    fixed = rows[0][2] - rows[0][1]
    beyond = max(top - before for _, before, top, _ in rows) - fixed
    print(
        f"growth beyond the smallest's: {beyond:.2f} MiB; reference 3 chunks = {3 * chunk_mib:.2f} MiB "
        f"(ratio {beyond / (3 * chunk_mib):.2f}; target <= 1, the fixed amount being {fixed:.1f} MiB)"
    )
    print(
        f"{cases} cases x 3 x {each / 2**20:g} MiB in flight (partner {latency} ms): "
        f"peak RSS {peak_many:.1f} MiB, before {before:.1f} (ratio {peak_many / before:.2f}); "
        f"target < 300 MiB; all done in {took_many:.1f} s"
    )
    print(
        f"the partner opened {sum(stats['materials'].values())} materials, {stats['material_bytes'] / 2**20:,.0f} MiB"
    )
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    main()
