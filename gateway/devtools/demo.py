"""``xgw demo``: file a 社保转入 and a 医疗费用报销 case through the real HTTP API and print each
step of their journey. Uses the SAMPLE forms shipped with the mapping data."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import aiohttp

from gateway.config import Settings
from gateway.storage import open_store
from mappings.examples import sample_filing

DEMO_HALL = "襄州区政务服务中心"


async def demo_token(settings: Settings) -> str:
    path = settings.data_dir / "demo-window.token"
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    store = await open_store(settings.effective_database_url)
    try:
        token = await store.create_token(f"demo-window-{uuid.uuid4().hex[:6]}", "window", DEMO_HALL)
    finally:
        await store.close()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


async def follow(
    session: aiohttp.ClientSession, base: str, code: str, timeout: float
) -> dict[str, Any]:
    body = {**sample_filing(code), "clerk": "demo"}
    async with session.post(
        f"{base}/api/v1/cases", json=body, headers={"Idempotency-Key": f"demo-{uuid.uuid4().hex}"}
    ) as response:
        case = await response.json()
        if response.status not in (200, 201):
            print(f"[{code}] refused: {case}")
            return dict(case)
    print(f"[{code}] filed case {case['id']} ({case['title']})")
    shown = 0
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with session.get(f"{base}/api/v1/cases/{case['id']}") as response:
            case = await response.json()
        for step in case["timeline"][shown:]:
            detail = ", ".join(
                f"{k}={v}" for k, v in (step["detail"] or {}).items() if v is not None
            )
            print(
                f"[{code}] {step['time']}  {step['step']:<22} {step['sub_id'] or '':<26} {detail}"
            )
        shown = len(case["timeline"])
        if (
            case["status"] in ("done", "attention", "cancelled")
            or asyncio.get_running_loop().time() > deadline
        ):
            break
        await asyncio.sleep(0.2)
    print(f"[{code}] case {case['id']}: {case['status']}")
    for sub in case["sub_matters"]:
        result = sub.get("result") or {}
        summary = ", ".join(
            f"{k}={v}" for k, v in list(result.items())[:4] if not isinstance(v, dict | list)
        )
        print(
            f"[{code}]   {sub['id']:<26} {sub['status']:<9} → {sub['jurisdiction']} {sub['partner_matter'] or ''} {summary}"
        )
    return dict(case)


async def run_demo(settings: Settings, base: str, timeout: float) -> int:
    token = await demo_token(settings)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        cases = await asyncio.gather(
            *(follow(session, base, code, timeout) for code in ("YJS-SBZR", "YJS-YLBX"))
        )
    return 0 if all(c.get("status") == "done" for c in cases) else 1
