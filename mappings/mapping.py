"""Matter-code mapping between a local and a partner jurisdiction: versioned, conditional.

A mapping set is a folder ``mapping-sets/<local>-<partner>/`` of version files; each version has
an effective window, may ``extends:`` an earlier one (then lists only what changes, and may
``retire:`` local codes). Entries:

    - local: XZ-SB-0001            # one-to-one
      partner: XY-RS-0001
      transform: generic_shebao
    - local: XZ-SB-YLZY            # one-to-many, chosen by a payload field
      to:
        - when: {field: pension.scheme, equals: urban_employee}
          partner: XY-RS-0101
          transform: pension_contact_letter
        - when: {field: pension.scheme, equals: urban_rural_resident}
          partner: XY-RS-0102
          transform: pension_contact_letter
    - local: XZ-YB-0002            # many-to-one: two local codes share a partner code,
      partner: XY-YB-0001          # so each says how to tell them apart inbound
      transform: medical_registration
      inbound_when: {field: dcla_type, equals: "2"}

The inverse (partner → local, for inbound traffic) is derived; a partner code that two local
codes map to without a telling ``inbound_when`` is a load-time error, not a runtime surprise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from typing import Any

from mappings.source import LocatedDict, LocatedList, Location, Problem


class MappingError(LookupError):
    """A matter code that cannot be mapped; the message names the code and jurisdiction."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # stable error code: MATTER_UNKNOWN, MATTER_RETIRED, …
        self.message = message


@dataclass(frozen=True)
class Condition:
    field_path: tuple[str, ...]
    equals: Any

    def holds(self, payload: Any) -> bool:
        value = payload
        for part in self.field_path:
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        return bool(value == self.equals)

    def describe(self) -> str:
        return f"{'.'.join(self.field_path)} == {self.equals!r}"


@dataclass(frozen=True)
class Target:
    partner_code: str
    transform: str
    when: Condition | None
    inbound_when: Condition | None
    where: Location


@dataclass(frozen=True)
class Entry:
    local_code: str
    targets: tuple[Target, ...]
    where: Location


@dataclass(frozen=True)
class MappingVersion:
    local_region: str
    partner_region: str
    version: str
    effective_from: date
    effective_to: date | None
    entries: dict[str, Entry]  # by local code, after applying `extends`
    retired: frozenset[str]
    where: Location

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)


@dataclass(frozen=True)
class Resolution:
    """What a sub-matter becomes on the other side, and with which transform."""

    local_code: str
    partner_code: str
    transform: str
    version: str
    condition: Condition | None


def _target(node: LocatedDict, when: Condition | None, problems: list[Problem]) -> Target:
    """A mapping target from an entry (one partner code) or one of its ``to:`` branches."""
    return Target(
        str(node.get("partner", "")),
        str(node.get("transform", "")),
        when,
        _condition(node.get("inbound_when"), node.at("inbound_when"), problems),
        node.at("partner"),
    )


def _condition(raw: Any, where_: Location, problems: list[Problem]) -> Condition | None:
    from mappings.transform import _path

    if raw is None:
        return None
    if not isinstance(raw, LocatedDict) or set(raw) != {"field", "equals"}:
        problems.append(Problem(where_, "a condition is {field: PATH, equals: VALUE}"))
        return None
    path = _path(raw["field"], raw.at("field"), problems, "condition field")
    return Condition(path, raw["equals"]) if path else None


def _date(raw: Any, where_: Location, problems: list[Problem], what: str) -> date | None:
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        problems.append(Problem(where_, f"{what} must be a date yyyy-MM-dd, not {raw!r}"))
        return None


def build_entries(raw: Any, problems: list[Problem], fallback: Location) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    if raw is None:
        return entries
    if not isinstance(raw, LocatedList):
        problems.append(Problem(fallback, "matters must be a list"))
        return entries
    for item in raw:
        if not isinstance(item, LocatedDict):
            problems.append(Problem(raw.location, "a matter entry must be a mapping"))
            continue
        loc = item.location
        for key in sorted(
            set(item) - {"local", "partner", "transform", "to", "inbound_when", "note"}
        ):
            problems.append(Problem(item.at(key), f"unknown key {key!r}"))
        local = str(item.get("local", ""))
        if not local:
            problems.append(Problem(loc, "entry without local code"))
            continue
        if local in entries:
            problems.append(
                Problem(
                    loc,
                    f"local code {local} is mapped twice in this version (line {entries[local].where.line})",
                )
            )
            continue
        targets: list[Target] = []
        if "to" in item:
            branches = item["to"]
            if not isinstance(branches, LocatedList) or not branches:
                problems.append(Problem(item.at("to"), "to: must be a non-empty list"))
                continue
            for branch in branches:
                if not isinstance(branch, LocatedDict):
                    problems.append(Problem(item.at("to"), "a branch must be a mapping"))
                    continue
                when = _condition(branch.get("when"), branch.at("when"), problems)
                if when is None:
                    problems.append(Problem(branch.location, "each branch of to: needs when:"))
                targets.append(_target(branch, when, problems))
        else:
            targets.append(_target(item, None, problems))
        for target in targets:
            if not target.partner_code or not target.transform:
                problems.append(
                    Problem(target.where, f"{local}: partner and transform are required")
                )
        entries[local] = Entry(local, tuple(targets), loc)
    return entries


def build_version(
    document: Any,
    local_region: str,
    partner_region: str,
    earlier: dict[str, MappingVersion],
    problems: list[Problem],
    fallback: Location,
) -> MappingVersion | None:
    if not isinstance(document, LocatedDict):
        problems.append(Problem(fallback, "a mapping-set version must be a mapping"))
        return None
    for key in sorted(
        set(document)
        - {
            "version",
            "effective_from",
            "effective_to",
            "extends",
            "matters",
            "retire",
            "description",
        }
    ):
        problems.append(Problem(document.at(key), f"unknown key {key!r}"))
    version = str(document.get("version", ""))
    start = _date(
        document.get("effective_from"), document.at("effective_from"), problems, "effective_from"
    )
    end = None
    if document.get("effective_to") is not None:
        end = _date(document["effective_to"], document.at("effective_to"), problems, "effective_to")
    entries: dict[str, Entry] = {}
    retired: set[str] = set()
    base = document.get("extends")
    if base is not None:
        parent = earlier.get(str(base))
        if parent is None:
            problems.append(Problem(document.at("extends"), f"extends unknown version {base!r}"))
        else:
            entries.update(parent.entries)
            retired.update(parent.retired)
    entries.update(build_entries(document.get("matters"), problems, document.location))
    for code in document.get("retire") or []:
        entries.pop(str(code), None)
        retired.add(str(code))
    if start is None or not version:
        if not version:
            problems.append(Problem(document.location, "version: is required"))
        return None
    if end is not None and end < start:
        problems.append(
            Problem(document.at("effective_to"), "effective_to is before effective_from")
        )
    return MappingVersion(
        local_region,
        partner_region,
        version,
        start,
        end,
        entries,
        frozenset(retired),
        document.location,
    )


def check_versions(versions: list[MappingVersion], problems: list[Problem]) -> None:
    ordered = sorted(versions, key=lambda v: v.effective_from)
    for previous, current in itertools.pairwise(ordered):
        if previous.effective_to is None or previous.effective_to >= current.effective_from:
            problems.append(
                Problem(
                    current.where,
                    f"version {current.version} overlaps {previous.version} ({previous.where})",
                )
            )


def inverse_index(
    version: MappingVersion, problems: list[Problem]
) -> dict[str, list[tuple[Entry, Target]]]:
    """partner code -> the local entries mapping to it; ambiguity is a located problem."""
    index: dict[str, list[tuple[Entry, Target]]] = {}
    for entry in version.entries.values():
        for target in entry.targets:
            index.setdefault(target.partner_code, []).append((entry, target))
    for partner_code, sources in index.items():
        locals_ = {entry.local_code for entry, _ in sources}
        if len(locals_) < 2:
            continue
        tellers = [t.inbound_when for _, t in sources]
        distinct = {(c.field_path, repr(c.equals)) for c in tellers if c is not None}
        if None in tellers or len(distinct) != len(sources):
            where_ = sources[-1][1].where
            problems.append(
                Problem(
                    where_,
                    f"partner code {partner_code} maps back to {', '.join(sorted(locals_))} "
                    f"in {version.local_region}-{version.partner_region} {version.version}: "
                    "give each an inbound_when that tells them apart",
                )
            )
    return index


def pick_version(
    versions: list[MappingVersion], on: date, local: str, partner: str
) -> MappingVersion:
    for version in versions:
        if version.in_force(on):
            return version
    raise MappingError(
        "MAPPING_NOT_IN_FORCE",
        f"no mapping from {local} to {partner} is in force on {on.isoformat()}",
    )


def resolve(version: MappingVersion, local_code: str, payload: Any) -> Resolution:
    entry = version.entries.get(local_code)
    if entry is None:
        if local_code in version.retired:
            raise MappingError(
                "MATTER_RETIRED",
                f"matter {local_code} of {version.local_region} is retired in mapping {version.version} to {version.partner_region}",
            )
        raise MappingError(
            "MATTER_UNMAPPED",
            f"matter {local_code} of {version.local_region} has no mapping to {version.partner_region} (version {version.version})",
        )
    matches = [t for t in entry.targets if t.when is None or t.when.holds(payload)]
    if not matches:
        conditions = "; ".join(t.when.describe() for t in entry.targets if t.when)
        raise MappingError(
            "MATTER_CONDITION_UNMET",
            f"matter {local_code} of {version.local_region} maps to {version.partner_region} only when {conditions}",
        )
    if len(matches) > 1:
        raise MappingError(
            "MATTER_AMBIGUOUS",
            f"matter {local_code} of {version.local_region}: several mappings to {version.partner_region} apply ({', '.join(t.partner_code for t in matches)})",
        )
    target = matches[0]
    return Resolution(
        local_code, target.partner_code, target.transform, version.version, target.when
    )


def resolve_inbound(
    version: MappingVersion,
    index: dict[str, list[tuple[Entry, Target]]],
    partner_code: str,
    payload: Any,
) -> Resolution:
    sources = index.get(partner_code)
    if not sources:
        raise MappingError(
            "MATTER_UNMAPPED",
            f"matter {partner_code} of {version.partner_region} has no mapping to {version.local_region} (version {version.version})",
        )
    if len({e.local_code for e, _ in sources}) > 1:
        sources = [
            (e, t)
            for e, t in sources
            if t.inbound_when is not None and t.inbound_when.holds(payload)
        ]
        if len(sources) != 1:
            raise MappingError(
                "MATTER_AMBIGUOUS",
                f"matter {partner_code} of {version.partner_region}: the payload does not tell which {version.local_region} matter it is",
            )
    entry, target = sources[0]
    return Resolution(
        entry.local_code, partner_code, target.transform, version.version, target.inbound_when
    )
