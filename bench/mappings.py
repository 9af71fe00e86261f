"""Mapping speed: loading a full-scale catalogue and mapping set; transforms per second.

Usage: python bench/mappings.py [--seconds S] [--smoke]
Targets (one core): load < 300 ms at 1,631 local matters; >= 20,000 transforms/s of the 社保转入
信息表 payload (20 yearly rows) in each direction. The reference in the same run is an orjson
dumps+loads of the same payload (a floor for "touch every field once").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._metering import rate
from mappings.catalogue import render_catalogue_csv
from mappings.registry import build_registry, packaged_data_dir
from mappings.sample import large_catalogue
from mappings.transform import AMOUNT_TWO_DECIMALS, CENTS, MONTHS_IN, MONTHS_OUT

_TWO_DECIMALS = AMOUNT_TWO_DECIMALS.fullmatch
_MONTH_OUT, _MONTH_IN = MONTHS_OUT.get, MONTHS_IN.get


def minimal_rows_outbound(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The 信息表's rows 元 -> 分 as briefly as Python allows (the ceiling line, not a transform:
    it takes the well-formed path only and reports nothing)."""
    rows = []
    for row in payload["record"]["contributions"]:
        out: dict[str, Any] = {}
        if type(v := row.get("year")) is int:
            out["aae001"] = v
        if type(v := row.get("from_month")) is str and (month := _MONTH_OUT(v)) is not None:
            out["aae041"] = month
        if type(v := row.get("to_month")) is str and (month := _MONTH_OUT(v)) is not None:
            out["aae042"] = month
        if type(v := row.get("base")) is str and _TWO_DECIMALS(v):
            out["aae180"] = int(v.replace(".", ""))
        if type(v := row.get("months")) is int:
            out["aae202"] = v
        if type(v := row.get("personal_contribution")) is str and _TWO_DECIMALS(v):
            out["aae022"] = int(v.replace(".", ""))
        if type(v := row.get("employer_contribution")) is str and _TWO_DECIMALS(v):
            out["aae020"] = int(v.replace(".", ""))
        rows.append(out)
    return rows


def minimal_rows_inbound(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The same rows 分 -> 元."""
    rows = []
    for row in payload["ac20"]:
        out: dict[str, Any] = {}
        if type(v := row.get("aae001")) is int:
            out["year"] = v
        if type(v := row.get("aae041")) is str and (month := _MONTH_IN(v)) is not None:
            out["from_month"] = month
        if type(v := row.get("aae042")) is str and (month := _MONTH_IN(v)) is not None:
            out["to_month"] = month
        if type(v := row.get("aae180")) is int and v >= 0:
            out["base"] = f"{v // 100}.{CENTS[v % 100]}"
        if type(v := row.get("aae202")) is int:
            out["months"] = v
        if type(v := row.get("aae022")) is int and v >= 0:
            out["personal_contribution"] = f"{v // 100}.{CENTS[v % 100]}"
        if type(v := row.get("aae020")) is int and v >= 0:
            out["employer_contribution"] = f"{v // 100}.{CENTS[v % 100]}"
        rows.append(out)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--matters", type=int, default=1631)
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the script works")
    args = parser.parse_args()
    seconds = 0.05 if args.smoke else args.seconds

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "data"
        shutil.copytree(packaged_data_dir(), folder)
        matters = large_catalogue(args.matters)
        (folder / "catalogue" / "420607.csv").write_text(
            render_catalogue_csv(matters), encoding="utf-8"
        )
        loads = []
        for _ in range(2 if args.smoke else 7):
            start = time.perf_counter()
            registry, problems = build_registry(folder)
            loads.append((time.perf_counter() - start) * 1000)
            assert registry is not None, problems
        assert registry is not None
        local_matters = len(registry.catalogues["420607"].matters)
        all_matters = sum(len(c.matters) for c in registry.catalogues.values())

    transform = registry.transforms["pension_information_form"]
    example = yaml.safe_load(
        (packaged_data_dir() / "examples" / "pension_information_form.yaml").read_text(
            encoding="utf-8"
        )
    )["payload"]
    partner = transform.outbound(example)
    assert transform.inbound(partner) == example
    outbound = rate(lambda: transform.outbound(example), seconds)
    inbound = rate(lambda: transform.inbound(partner), seconds)
    reference = rate(lambda: orjson.loads(orjson.dumps(example)), seconds)
    # A ceiling for outbound: only what its 元 amounts need (the shape checked, the 分 read),
    # nothing else of the payload touched.
    amounts = [
        row[name]
        for row in example["record"]["contributions"]
        for name in ("base", "personal_contribution", "employer_contribution")
        if name in row
    ]
    two_decimals = AMOUNT_TWO_DECIMALS.fullmatch
    amounts_only = rate(
        lambda: [int(a.replace(".", "")) for a in amounts if two_decimals(a)], seconds
    )

    # A ceiling for each direction: the 20 rows alone (140 of the payload's 149 fields), each
    # field read, checked and written by hand-written straight-line Python with no problem
    # bookkeeping: what no transform in Python doing these checks passes.
    assert minimal_rows_outbound(example) == partner["ac20"]
    assert minimal_rows_inbound(partner) == example["record"]["contributions"]
    rows_outbound = rate(lambda: minimal_rows_outbound(example), seconds)
    rows_inbound = rate(lambda: minimal_rows_inbound(partner), seconds)
    print(
        f"catalogue: {local_matters} local matters ({all_matters} in all jurisdictions), "
        f"{sum(len(v) for v in registry.mapping_sets.values())} mapping versions, "
        f"{len(registry.transforms)} transforms"
    )
    print(f"{'measure':44}  {'value':>10}  {'reference':>10}  {'ratio':>6}")
    print(
        f"{'load, median of runs (ms)':44}  {statistics.median(loads):10.1f}  {'300 (target)':>10}"
    )
    rows = len(example["record"]["contributions"])
    for name, value in (
        (f"信息表 outbound ({rows} rows) transforms/s", outbound),
        (f"信息表 inbound ({rows} rows) transforms/s", inbound),
    ):
        print(f"{name:44}  {value:10.0f}  {reference:10.0f}  {value / reference:6.2f}")
    print(
        f"{f'  its {len(amounts)} amounts alone (checked, read)':44}  {amounts_only:10.0f}  "
        f"{reference:10.0f}  {amounts_only / reference:6.2f}"
    )
    for name, value in (
        (f"  its {rows} rows alone, minimal Python, out", rows_outbound),
        (f"  its {rows} rows alone, minimal Python, in", rows_inbound),
    ):
        print(f"{name:44}  {value:10.0f}  {reference:10.0f}  {value / reference:6.2f}")
    print(
        "reference: orjson dumps+loads of the same payload; targets: load < 300 ms, "
        ">= 20,000 transforms/s each way"
    )
    if args.smoke:
        print("(smoke run: figures are not meaningful)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
