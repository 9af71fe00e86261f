"""Sample payloads and hypothesis strategies derived from transform rules."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from stdnum.cn import ric

from mappings.examples import example as _example
from mappings.registry import Registry, load_registry, packaged_data_dir
from mappings.transform import Rule

DATA = packaged_data_dir()
REGISTRY: Registry = load_registry()
REGIONS = ["420607", "411329", "420300", "421300", "429021", "110105"]


def example(transform: str) -> dict[str, Any]:
    return _example(transform, DATA)


def resident_ids() -> st.SearchStrategy[str]:
    def build(region: str, born: date, serial: int) -> str:
        body = f"{region}{born:%Y%m%d}{serial:03d}"
        return body + ric.calc_check_digit(body + "0")

    return st.builds(
        build,
        st.sampled_from(REGIONS),
        st.dates(date(1930, 1, 1), date(2024, 12, 31)),
        st.integers(0, 999),
    )


def _scalar(rule: Rule) -> st.SearchStrategy[Any]:
    kind = rule.type
    if kind == "string":
        return st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf"]),
            max_size=rule.max_length or 60,
        )
    if kind == "integer":
        return st.integers(-(2**40), 2**40)
    if kind == "boolean":
        return st.booleans()
    if kind == "resident_id":
        return resident_ids()
    if kind == "region":
        return st.sampled_from(REGIONS[:5])
    if kind == "date":
        return st.dates(date(1900, 1, 1), date(2199, 12, 31)).map(lambda d: d.isoformat())
    if kind == "month":
        return st.tuples(st.integers(1900, 2199), st.integers(1, 12)).map(
            lambda t: f"{t[0]}-{t[1]:02d}"
        )
    if kind == "amount":
        return st.integers(0, 10**12).map(lambda fen: f"{fen // 100}.{fen % 100:02d}")
    if kind == "code":
        assert rule.table is not None
        return st.sampled_from(sorted(REGISTRY.tables[rule.table].forward))
    raise AssertionError(kind)


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def local_payloads(rules: tuple[Rule, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Random valid local payloads: required fields always, optional ones sometimes."""
    mapped = [r for r in rules if r.local is not None and r.const is None and r.derive is None]

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for rule in mapped:
            assert rule.local is not None
            if not rule.required and draw(st.booleans()):
                continue
            if rule.type == "list":
                value: Any = draw(st.lists(local_payloads(rule.items), max_size=4))
            else:
                value = draw(_scalar(rule))
            _put(payload, rule.local, value)
        return payload

    return build()


def write_copy(target: Path) -> Path:
    """A writable copy of the sample mapping folder, for seeding errors."""
    import shutil

    shutil.copytree(DATA, target)
    return target
