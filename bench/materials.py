"""Sealing and opening materials as SM4-GCM chunk streams (security/stream.py), against the
backend's raw speed.

Usage: python bench/materials.py [--mib 20] [--rounds 5] [--smoke]
Target (#22): sealing and opening run at >= 0.7 of raw SM4-GCM + SM3 of the same backend.
What is timed, per material of --mib MiB given in 256 KiB pieces (as an upload arrives):
- seal: the chunks sealed, and the SM3 of the sealed stream that the signed manifest carries;
- open: that SM3 checked, and the chunks opened.
Reference in the same run: one SM4-GCM call over the whole material plus one SM3 over it (no
chunking, no streaming: the backend's floor for the same work). Medians of --rounds, each
round timing the reference and the stream alternately. The material is random bytes (SAMPLE).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from security.backend import get_backend
from security.digest import sm3
from security.stream import open_stream, seal_stream

PIECE = 256 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    mib, rounds = (1, 1) if args.smoke else (args.mib, args.rounds)
    backend = get_backend("native")
    key, iv, aad = os.urandom(16), os.urandom(12), b"msg-bench\x00invoices"
    data = os.urandom(mib * 1024 * 1024)
    pieces = [data[i : i + PIECE] for i in range(0, len(data), PIECE)]
    raw_seal, raw_open, seals, opens = [], [], [], []
    for _ in range(rounds):
        began = time.perf_counter()
        ciphertext, tag = backend.sm4_gcm_encrypt(key, iv, data, aad)
        sm3(data)
        raw_seal.append(time.perf_counter() - began)
        began = time.perf_counter()
        sm3(ciphertext)
        backend.sm4_gcm_decrypt(key, iv, ciphertext, tag, aad)
        raw_open.append(time.perf_counter() - began)

        began = time.perf_counter()
        prefix, chunks = seal_stream(key, aad, iter(pieces), backend)
        sealed = list(chunks)
        digest = sm3(b"".join(sealed))  # the manifest's digest of what is exchanged
        seals.append(time.perf_counter() - began)
        began = time.perf_counter()
        assert sm3(b"".join(sealed)) == digest
        opened = b"".join(open_stream(key, prefix, aad, iter(sealed), backend))
        opens.append(time.perf_counter() - began)
        assert opened == data
    size = len(data) / (1024 * 1024)
    print(f"{'measure':40}  {'MiB/s':>9}  {'reference':>9}  {'ratio':>6}")
    for name, mine, floor in (
        ("seal (chunks + SM3 of the sealed)", seals, raw_seal),
        ("open (SM3 checked + chunks)", opens, raw_open),
    ):
        rate, reference = size / statistics.median(mine), size / statistics.median(floor)
        print(f"{name:40}  {rate:9.1f}  {reference:9.1f}  {rate / reference:6.2f}")
    print(
        f"reference: one SM4-GCM call + one SM3 over {mib} MiB (backend {backend.name}); "
        "target: ratio >= 0.7"
    )
    if args.smoke:
        print("(smoke run: figures are not meaningful)")


if __name__ == "__main__":
    main()
