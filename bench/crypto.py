"""Crypto speed: our backends against `openssl speed`, measured in one run.

Usage: python bench/crypto.py [--seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._metering import rate
from security.backend import get_backend
from security.curve import DEFAULT_DISTID
from security.keys import generate_private_key
from tests.security_helpers import TO_XZ_PARTY, Pair


def openssl_sm2(seconds: float) -> tuple[float, float]:
    out = subprocess.run(
        ["openssl", "speed", "-seconds", str(max(1, int(seconds))), "sm2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = [row for row in out.splitlines() if "SM2" in row][-1]
    numbers = re.findall(r"\d+\.\d+", line)
    return float(numbers[-2]), float(numbers[-1])


def openssl_evp(algorithm: str, seconds: float, size: int) -> float:
    out = subprocess.run(
        [
            "openssl",
            "speed",
            "-seconds",
            str(max(1, int(seconds))),
            "-bytes",
            str(size),
            "-evp",
            algorithm,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value = out.strip().splitlines()[-1].split()[-1]
    return float(value.rstrip("k")) * 1000 / 1e6  # MB/s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the script works")
    args = parser.parse_args()
    seconds = 0.05 if args.smoke else args.seconds
    native, gmssl = get_backend("native"), get_backend("gmssl")
    key = generate_private_key(native)
    message = os.urandom(256)
    rows: list[tuple[str, float, float, str]] = []

    ref_sign, ref_verify = openssl_sm2(seconds)
    for backend, share in ((native, 1.0), (gmssl, 0.3)):
        signature = backend.sm2_sign(key.scalar, key.public.point, message, DEFAULT_DISTID)
        sign = rate(
            partial(backend.sm2_sign, key.scalar, key.public.point, message, DEFAULT_DISTID),
            seconds * share,
        )
        verify = rate(
            partial(backend.sm2_verify, key.public.point, message, signature, DEFAULT_DISTID),
            seconds * share,
        )
        rows.append((f"SM2 sign ops/s ({backend.name})", sign, ref_sign, "openssl speed sm2"))
        rows.append((f"SM2 verify ops/s ({backend.name})", verify, ref_verify, "openssl speed sm2"))

    size = 16384
    block = os.urandom(size)
    sm3_ref = openssl_evp("sm3", seconds, size)
    ctr_ref = openssl_evp("sm4-ctr", seconds, size)
    content_key, iv = os.urandom(16), os.urandom(12)
    for backend, share, chunk in ((native, 1.0, block), (gmssl, 0.2, block[:1024])):
        sm3 = rate(partial(backend.sm3, chunk), seconds * share) * len(chunk) / 1e6
        gcm = (
            rate(
                partial(backend.sm4_gcm_encrypt, content_key, iv, chunk, b""),
                seconds * share,
            )
            * len(chunk)
            / 1e6
        )
        rows.append((f"SM3 MB/s ({backend.name})", sm3, sm3_ref, "openssl speed -evp sm3"))
        rows.append(
            (
                f"SM4-GCM MB/s ({backend.name})",
                gcm,
                ctr_ref,
                "openssl -evp sm4-ctr (3.0 has no sm4-gcm)",
            )
        )

    pair = Pair()
    payload = os.urandom(4096)
    loop = asyncio.new_event_loop()

    def seal_and_open() -> None:
        sealed = pair.xy_sealer.seal(
            payload, receiver=TO_XZ_PARTY, kind="request", matter="M", idem_key="k"
        )
        loop.run_until_complete(pair.xz_opener.open(sealed))

    seal_open = rate(seal_and_open, seconds)
    loop.close()
    crypto_bound = 1 / (
        1 / ref_sign + 1 / ref_verify + 1 / ref_verify
    )  # sign + verify + unwrap≈verify
    rows.append(
        (
            "seal+open 4 KiB /s (native)",
            seal_open,
            crypto_bound,
            "1/(1/sign+2/verify) of openssl sm2",
        )
    )

    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'ours':>10}  {'reference':>10}  {'ratio':>6}  reference")
    for name, ours, reference, what in rows:
        print(
            f"{name.ljust(width)}  {ours:10.1f}  {reference:10.1f}  {ours / reference:6.2f}  {what}"
        )
    print("\ntargets: native SM2 sign and verify ratio >= 0.60; seal+open 4 KiB >= 400/s")
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
