"""Value-code tables (性别, 证件类型, 险种, 关系, …): local value ⇄ partner code, bijective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mappings.source import LocatedDict, Location, Problem, where


@dataclass(frozen=True)
class CodeTable:
    name: str
    description: str
    forward: dict[str, str]  # local value -> partner code
    inverse: dict[str, str]  # partner code -> local value
    where: Location


def build_tables(
    document: Any, problems: list[Problem], fallback: Location
) -> dict[str, CodeTable]:
    """``tables: {name: {description?, values: {local: partner}}}``; duplicates are errors."""
    tables: dict[str, CodeTable] = {}
    if not isinstance(document, LocatedDict) or not isinstance(document.get("tables"), LocatedDict):
        problems.append(Problem(where(document, fallback=fallback), "expected 'tables:' mapping"))
        return tables
    for name, spec in document["tables"].items():
        loc = document["tables"].at(name)
        if not isinstance(spec, LocatedDict) or not isinstance(spec.get("values"), LocatedDict):
            problems.append(Problem(loc, f"table {name}: expected 'values:' mapping"))
            continue
        values = spec["values"]
        forward: dict[str, str] = {}
        inverse: dict[str, str] = {}
        for local, partner in values.items():
            if not isinstance(partner, str):
                problems.append(
                    Problem(
                        values.at(local),
                        f"table {name}: code for {local!r} must be a quoted string",
                    )
                )
                continue
            if partner in inverse:
                problems.append(
                    Problem(
                        values.at(local),
                        f"table {name}: code {partner!r} is used for both {inverse[partner]!r} and {local!r} (the inverse would be ambiguous)",
                    )
                )
                continue
            forward[local], inverse[partner] = partner, local
        tables[name] = CodeTable(name, str(spec.get("description", "")), forward, inverse, loc)
    return tables
