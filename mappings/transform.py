"""Declarative schema transforms, compiled once at load into plain Python functions.

A transform is one list of field rules per matter pair; both directions are compiled from it, so
local → partner → local is the identity on every mapped field by construction (and tested).

Rule keys (YAML):
  local / partner   dotted paths on each side (``applicant.id_number`` ↔ ``aac002``)
  type              string | integer | boolean | resident_id | uscc | region | date | month |
                    amount | code | list
  required          the source side must carry it (default false)
  max_length        strings
  table             code tables (type code): local values are the table's keys
  partner_format    dates: yyyyMMdd (default) | yyyy-MM-dd; months: yyyyMM (default) | yyyy-MM
  partner_unit      amounts: fen (integer 分) | yuan (string, 2 decimals; the local form)
  items             rules for each row of a list
  const             a constant partner value (outbound only)
  derive            birth_date | sex, from the local 身份证号 at ``from`` (outbound only)

Generated code only ever contains identifiers checked against ``_NAME`` and literals produced by
``repr``; rule values never reach it as code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from mappings import identifiers
from mappings.codes import CodeTable
from mappings.source import Location, Problem
from rules.text import check_text, code_pattern, text_problem

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TYPES = frozenset(
    {
        "string",
        "integer",
        "boolean",
        "resident_id",
        "uscc",
        "region",
        "date",
        "month",
        "amount",
        "code",
        "list",
    }
)
_AMOUNT = code_pattern(r"^(0|[1-9]\d{0,12})(?:\.(\d{1,2}))?$")
# The shape nearly every 元 amount has (two decimals): its digits without the point are the 分.
AMOUNT_TWO_DECIMALS = code_pattern(r"(?:0|[1-9]\d{0,12})\.\d\d")
CENTS = tuple(f"{cents:02d}" for cents in range(100))  # 分 -> the two decimals, no formatting
_ISO_DATE = code_pattern(r"^\d{4}-\d{2}-\d{2}$")
_COMPACT_DATE = code_pattern(r"^\d{8}$")
_ISO_MONTH = code_pattern(r"^\d{4}-(0[1-9]|1[0-2])$")
_COMPACT_MONTH = code_pattern(r"^\d{4}(0[1-9]|1[0-2])$")
MONTHS_OUT = {f"{y}-{m:02d}": f"{y}{m:02d}" for y in range(1900, 2200) for m in range(1, 13)}
MONTHS_IN = {v: k for k, v in MONTHS_OUT.items()}


@dataclass(frozen=True)
class PayloadProblem:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"location": self.path, "message": self.message}


class TransformError(ValueError):
    """A payload that cannot be transformed; ``problems`` lists every problem at once."""

    def __init__(self, transform: str, direction: str, problems: list[PayloadProblem]) -> None:
        self.transform, self.direction, self.problems = transform, direction, problems
        super().__init__(
            f"{transform} ({direction}): " + "; ".join(f"{p.path}: {p.message}" for p in problems)
        )


@dataclass(frozen=True)
class Rule:
    where: Location
    local: tuple[str, ...] | None
    partner: tuple[str, ...]
    type: str
    required: bool = False
    max_length: int | None = None
    table: str | None = None
    partner_format: str | None = None
    partner_unit: str | None = None
    items: tuple[Rule, ...] = ()
    const: Any = None
    derive: str | None = None
    derive_from: tuple[str, ...] | None = None


@dataclass
class Transform:
    name: str
    description: str
    where: Location
    rules: tuple[Rule, ...]
    outbound: Callable[[Any], dict[str, Any]] = field(repr=False)
    inbound: Callable[[Any], dict[str, Any]] = field(repr=False)
    source_outbound: str = field(repr=False, default="")
    source_inbound: str = field(repr=False, default="")


# -- converters: (value) -> converted value, ValueError with a human message ------------------


def _string(max_length: int | None) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if type(value) is not str:
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if max_length is not None and len(value) > max_length:
            raise ValueError(f"longer than {max_length} characters")
        return check_text(value)

    return convert


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"must be an integer, not {type(value).__name__}")
    return value


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false, not {type(value).__name__}")
    return value


def _checked(check: Callable[[str], str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if type(value) is not str:
            raise ValueError(f"must be a string, not {type(value).__name__}")
        try:
            return check(value)
        except identifiers.IdentifierError as exc:
            raise ValueError(str(exc)) from None

    return convert


def _iso_to_compact_date(value: Any) -> str:
    if type(value) is not str or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date yyyy-MM-dd")
    date.fromisoformat(value)  # calendar check (ValueError names the problem)
    return value[:4] + value[5:7] + value[8:]


def _compact_to_iso_date(value: Any) -> str:
    if type(value) is not str or not _COMPACT_DATE.fullmatch(value):
        raise ValueError("must be a date yyyyMMdd")
    iso = f"{value[:4]}-{value[4:6]}-{value[6:]}"
    date.fromisoformat(iso)
    return iso


def _iso_date(value: Any) -> str:
    if type(value) is not str or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date yyyy-MM-dd")
    date.fromisoformat(value)
    return value


def _iso_to_compact_month(value: Any) -> str:
    if type(value) is not str or not _ISO_MONTH.fullmatch(value):
        raise ValueError("must be a month yyyy-MM")
    return value[:4] + value[5:]


def _compact_to_iso_month(value: Any) -> str:
    if type(value) is not str or not _COMPACT_MONTH.fullmatch(value):
        raise ValueError("must be a month yyyyMM")
    return f"{value[:4]}-{value[4:]}"


def _iso_month(value: Any) -> str:
    if type(value) is not str or not _ISO_MONTH.fullmatch(value):
        raise ValueError("must be a month yyyy-MM")
    return value


def _yuan(value: Any) -> str:
    """The local amount form: a string of 元 with exactly two decimals."""
    if type(value) is not str:
        raise ValueError('must be an amount in 元 as a string, e.g. "1234.50"')
    match = _AMOUNT.fullmatch(value)
    if match is None:
        raise ValueError("must be an amount in 元 with at most two decimals")
    return f"{match.group(1)}.{(match.group(2) or '').ljust(2, '0')}"


def _yuan_to_fen(value: Any) -> int:
    whole, cents = _yuan(value).split(".")
    return int(whole) * 100 + int(cents)


def _fen_to_yuan(value: Any) -> str:
    if type(value) is not int or value < 0:
        raise ValueError("must be a non-negative integer amount in 分")
    return f"{value // 100}.{value % 100:02d}"


def _code(table: CodeTable, inverse: bool) -> Callable[[Any], str]:
    mapping = table.inverse if inverse else table.forward
    allowed = ", ".join(sorted(mapping)[:12])

    def convert(value: Any) -> str:
        try:
            return mapping[value]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {table.name} code {value!r} (allowed: {allowed})") from None

    return convert


def _derive_birth_date(partner_format: str | None) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        born = identifiers.birth_date_of(_checked(identifiers.check_resident_id)(value))
        return born.strftime("%Y-%m-%d" if partner_format == "yyyy-MM-dd" else "%Y%m%d")

    return convert


def converter(rule: Rule, outbound: bool, tables: dict[str, CodeTable]) -> Callable[[Any], Any]:
    kind = rule.type
    if kind == "string":
        return _string(rule.max_length)
    if kind == "integer":
        return _integer
    if kind == "boolean":
        return _boolean
    if kind == "resident_id":
        return _checked(identifiers.check_resident_id)
    if kind == "uscc":
        return _checked(identifiers.check_uscc)
    if kind == "region":
        return _checked(identifiers.check_region)
    if kind == "date":
        if rule.partner_format == "yyyy-MM-dd":
            return _iso_date
        return _iso_to_compact_date if outbound else _compact_to_iso_date
    if kind == "month":
        if rule.partner_format == "yyyy-MM":
            return _iso_month
        return _iso_to_compact_month if outbound else _compact_to_iso_month
    if kind == "amount":
        if rule.partner_unit == "yuan":
            return _yuan
        return _yuan_to_fen if outbound else _fen_to_yuan
    if kind == "code":
        assert rule.table is not None
        return _code(tables[rule.table], inverse=not outbound)
    raise AssertionError(f"no converter for {kind}")


# -- code generation ---------------------------------------------------------------------------


class _Emitter:
    def __init__(self, tables: dict[str, CodeTable], outbound: bool) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_P": PayloadProblem}
        self.tables, self.outbound = tables, outbound
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def bind(self, value: Any) -> str:
        name = self.fresh("_c")
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def get(self, indent: int, target: str, source: str, path: tuple[str, ...]) -> None:
        """target = source[path...] or None (missing and null are alike), never raising."""
        expression = source
        for i, part in enumerate(path):
            step = f"{expression}.get({part!r})"
            if i == 0:
                expression = step
                continue
            holder = self.fresh("_h")
            self.emit(indent, f"{holder} = {expression}")
            expression = f"({holder}.get({part!r}) if type({holder}) is dict else None)"
        self.emit(indent, f"{target} = {expression}")

    def put(self, indent: int, target: str, path: tuple[str, ...], value: str) -> None:
        container = target
        for part in path[:-1]:
            holder = self.fresh("_d")
            self.emit(indent, f"{holder} = {container}.setdefault({part!r}, {{}})")
            container = holder
        self.emit(indent, f"{container}[{path[-1]!r}] = {value}")

    def rules(self, indent: int, rules: tuple[Rule, ...], src: str, dst: str, prefix: str) -> None:
        for rule in rules:
            self.rule(indent, rule, src, dst, prefix)

    def rule(self, indent: int, rule: Rule, src: str, dst: str, prefix: str) -> None:
        outbound = self.outbound
        if rule.const is not None:
            if outbound:
                self.put(indent, dst, rule.partner, self.bind(rule.const))
            return
        if rule.derive is not None:
            if outbound:
                assert rule.derive_from is not None
                self._derived(indent, rule, src, dst, prefix)
            return
        assert rule.local is not None
        source_path, target_path = (
            (rule.local, rule.partner) if outbound else (rule.partner, rule.local)
        )
        shown = ".".join(source_path)
        where = f"{prefix} + {shown!r}" if prefix else repr(shown)
        value = self.fresh("_v")
        self.get(indent, value, src, source_path)
        self.emit(indent, f"if {value} is None:")
        if rule.required:
            self.emit(indent + 1, f"problems.append(_P({where}, 'is required'))")
        else:
            self.emit(indent + 1, "pass")
        if rule.type == "list":
            self.emit(indent, f"elif type({value}) is not list:")
            self.emit(indent + 1, f"problems.append(_P({where}, 'must be a list'))")
            self.emit(indent, "else:")
            rows, index, row, out_row = (self.fresh(n) for n in ("_rows", "_i", "_r", "_o"))
            self.emit(indent + 1, f"{rows} = []")
            self.emit(indent + 1, f"for {index}, {row} in enumerate({value}):")
            # The row's path is only built when a problem is reported.
            row_prefix = f"({where} + '[' + str({index}) + '].')"
            self.emit(indent + 2, f"if type({row}) is not dict:")
            self.emit(indent + 3, f"problems.append(_P({row_prefix}[:-1], 'must be an object'))")
            self.emit(indent + 3, "continue")
            self.emit(indent + 2, f"{out_row} = {{}}")
            self.rules(indent + 2, rule.items, row, out_row, row_prefix)
            self.emit(indent + 2, f"{rows}.append({out_row})")
            self.put(indent + 1, dst, target_path, rows)
            return
        if self._inline(indent, rule, value, where, dst, target_path):
            return
        convert = self.bind(converter(rule, outbound, self.tables))
        self.emit(indent, "else:")
        self.emit(indent + 1, "try:")
        self.emit(indent + 2, f"{value} = {convert}({value})")
        self.emit(indent + 1, "except ValueError as _e:")
        self.emit(indent + 2, f"problems.append(_P({where}, str(_e)))")
        self.emit(indent + 1, "else:")
        self.put(indent + 2, dst, target_path, value)

    def _fail(self, indent: int, where: str, message: str) -> None:
        self.emit(indent, f"problems.append(_P({where}, {message}))")

    def _lookup(
        self, indent: int, where: str, name: str, lookup: str, value: str, message: str
    ) -> None:
        """``name = lookup(value)`` for a string value, a problem when that gives None; leaves
        an ``else:`` open at ``indent + 1`` for the caller to put the converted value."""
        self.emit(indent, "else:")
        self.emit(indent + 1, f"{name} = {lookup}({value}) if type({value}) is str else None")
        self.emit(indent + 1, f"if {name} is None:")
        self._fail(indent + 2, where, message)
        self.emit(indent + 1, "else:")

    def _inline(
        self, indent: int, rule: Rule, value: str, where: str, dst: str, path: tuple[str, ...]
    ) -> bool:
        """Straight-line code for the hot scalar types (the converters say the same in words)."""
        kind, outbound = rule.type, self.outbound
        type_name = f"type({value}).__name__"
        if kind == "string":
            self.emit(indent, f"elif type({value}) is not str:")
            self._fail(indent + 1, where, f"'must be a string, not ' + {type_name}")
            if rule.max_length is not None:
                self.emit(indent, f"elif len({value}) > {rule.max_length}:")
                self._fail(indent + 1, where, repr(f"longer than {rule.max_length} characters"))
            problem = self.fresh("_t")
            self.emit(
                indent, f"elif ({problem} := {self.bind(text_problem)}({value})) is not None:"
            )
            self._fail(indent + 1, where, problem)
        elif kind == "integer":
            self.emit(indent, f"elif type({value}) is not int:")
            self._fail(indent + 1, where, f"'must be an integer, not ' + {type_name}")
        elif kind == "code":
            assert rule.table is not None
            table = self.tables[rule.table]
            mapping = self.bind(table.forward if outbound else table.inverse)
            allowed = ", ".join(sorted(table.forward if outbound else table.inverse)[:12])
            code = self.fresh("_k")
            self._lookup(
                indent,
                where,
                code,
                f"{mapping}.get",
                value,
                f"'unknown {table.name} code ' + repr({value}) + {f' (allowed: {allowed})'!r}",
            )
            self.put(indent + 2, dst, path, code)
            return True
        elif kind == "month" and rule.partner_format != "yyyy-MM":
            # A table of every month 1900–2199 validates and converts in one dict lookup.
            months, converted = self.bind(MONTHS_OUT if outbound else MONTHS_IN), self.fresh("_n")
            self._lookup(
                indent,
                where,
                converted,
                f"{months}.get",
                value,
                repr("must be a month " + ("yyyy-MM" if outbound else "yyyyMM")),
            )
            self.put(indent + 2, dst, path, converted)
            return True
        elif kind == "amount" and rule.partner_unit == "fen":
            if outbound:
                # The usual shape first: one regex and one int() (the general path below is
                # half as fast again, and it decides every other string, right or wrong).
                two_decimals = self.bind(AMOUNT_TWO_DECIMALS.fullmatch)
                self.emit(indent, f"elif type({value}) is str and {two_decimals}({value}):")
                self.put(indent + 1, dst, path, f"int({value}.replace('.', ''))")
                pattern, match = self.bind(_AMOUNT.fullmatch), self.fresh("_m")
                self._lookup(
                    indent,
                    where,
                    match,
                    pattern,
                    value,
                    repr("must be an amount in 元 as a string with at most two decimals"),
                )
                cents = self.fresh("_f")
                self.emit(indent + 2, f"{cents} = {match}[2]")
                self.put(
                    indent + 2,
                    dst,
                    path,
                    f"int({match}[1] + ({cents} + '00')[:2]) if {cents} else int({match}[1]) * 100",
                )
                return True
            self.emit(indent, f"elif type({value}) is not int or {value} < 0:")
            self._fail(indent + 1, where, repr("must be a non-negative integer amount in 分"))
            self.emit(indent, "else:")
            cents = self.bind(CENTS)
            self.put(indent + 1, dst, path, f"f'{{{value} // 100}}.{{{cents}[{value} % 100]}}'")
            return True
        else:
            return False
        self.emit(indent, "else:")
        self.put(indent + 1, dst, path, value)
        return True

    def _derived(self, indent: int, rule: Rule, src: str, dst: str, prefix: str) -> None:
        assert rule.derive_from is not None
        value = self.fresh("_v")
        self.get(indent, value, src, rule.derive_from)
        derive = (
            _derive_birth_date(rule.partner_format)
            if rule.derive == "birth_date"
            else _checked(identifiers.sex_of)
        )
        table = self.tables.get(rule.table or "")
        convert = self.bind(derive if table is None else _compose(derive, table.forward))
        # The source field's own rule reports a bad or missing 身份证号; derivation stays quiet.
        self.emit(indent, f"if type({value}) is str:")
        self.emit(indent + 1, "try:")
        self.emit(indent + 2, f"{value} = {convert}({value})")
        self.emit(indent + 1, "except ValueError:")
        self.emit(indent + 2, "pass")
        self.emit(indent + 1, "else:")
        self.put(indent + 2, dst, rule.partner, value)


def _compose(first: Callable[[Any], str], table: dict[str, str]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        return table[first(value)]

    return convert


def compile_direction(
    name: str, rules: tuple[Rule, ...], tables: dict[str, CodeTable], outbound: bool
) -> tuple[Callable[[Any], dict[str, Any]], str]:
    emitter = _Emitter(tables, outbound)
    direction = "outbound" if outbound else "inbound"
    emitter.emit(0, "def transform(src):")
    emitter.emit(1, "if type(src) is not dict:")
    emitter.emit(2, "raise _TransformError(_NAME, _DIR, [_P('', 'the payload must be an object')])")
    emitter.emit(1, "out = {}")
    emitter.emit(1, "problems = []")
    emitter.rules(1, rules, "src", "out", "")
    emitter.emit(1, "if problems:")
    emitter.emit(2, "raise _TransformError(_NAME, _DIR, problems)")
    emitter.emit(1, "return out")
    source = "\n".join(emitter.lines)
    namespace = {
        **emitter.namespace,
        "_TransformError": TransformError,
        "_NAME": name,
        "_DIR": direction,
    }
    exec(compile(source, f"<transform {name} {direction}>", "exec"), namespace)  # noqa: S102
    return namespace["transform"], source


# -- building rules from YAML ------------------------------------------------------------------


def _path(text: Any, where: Location, problems: list[Problem], what: str) -> tuple[str, ...] | None:
    if not isinstance(text, str) or not text:
        problems.append(Problem(where, f"{what} must be a dotted field path"))
        return None
    parts = tuple(text.split("."))
    if not all(_NAME.match(p) for p in parts):
        problems.append(Problem(where, f"{what} {text!r}: each part must be an identifier"))
        return None
    return parts


_RULE_KEYS = {
    "local",
    "partner",
    "type",
    "required",
    "max_length",
    "table",
    "partner_format",
    "partner_unit",
    "items",
    "const",
    "derive",
    "from",
    "description",
}


def build_rules(
    raw: Any, tables: dict[str, CodeTable], problems: list[Problem], fallback: Location
) -> tuple[Rule, ...]:
    from mappings.source import LocatedDict, where

    if not isinstance(raw, list):
        problems.append(Problem(where(raw, fallback=fallback), "fields must be a list of rules"))
        return ()
    rules: list[Rule] = []
    for item in raw:
        loc = where(item, fallback=fallback)
        if not isinstance(item, LocatedDict):
            problems.append(Problem(loc, "a rule must be a mapping"))
            continue
        unknown = sorted(set(item) - _RULE_KEYS)
        for key in unknown:
            problems.append(Problem(item.at(key), f"unknown rule key {key!r}"))
        partner = _path(item.get("partner"), item.at("partner"), problems, "partner")
        kind = item.get("type", "string")
        if "const" in item:
            if partner:
                rules.append(Rule(loc, None, partner, "string", const=item["const"]))
            continue
        if "derive" in item:
            derive = item["derive"]
            if derive not in ("birth_date", "sex"):
                problems.append(
                    Problem(item.at("derive"), f"derive must be birth_date or sex, not {derive!r}")
                )
                continue
            source = _path(item.get("from"), item.at("from"), problems, "from")
            table = item.get("table")
            if table is not None and table not in tables:
                problems.append(Problem(item.at("table"), f"unknown code table {table!r}"))
                continue
            if partner and source:
                rules.append(
                    Rule(
                        loc,
                        None,
                        partner,
                        "string",
                        derive=derive,
                        derive_from=source,
                        table=table,
                        partner_format=item.get("partner_format"),
                    )
                )
            continue
        local = _path(item.get("local"), item.at("local"), problems, "local")
        if kind not in TYPES:
            problems.append(
                Problem(
                    item.at("type"), f"unknown type {kind!r} (one of {', '.join(sorted(TYPES))})"
                )
            )
            continue
        table = item.get("table")
        if kind == "code" and table not in tables:
            problems.append(
                Problem(
                    item.at("table") if "table" in item else loc,
                    f"type code needs a known table, not {table!r}",
                )
            )
            continue
        partner_format = item.get("partner_format")
        allowed_formats = {"date": ("yyyyMMdd", "yyyy-MM-dd"), "month": ("yyyyMM", "yyyy-MM")}
        if partner_format is not None and partner_format not in allowed_formats.get(kind, ()):
            problems.append(
                Problem(
                    item.at("partner_format"),
                    f"partner_format {partner_format!r} does not fit type {kind}",
                )
            )
            continue
        unit = item.get("partner_unit")
        if kind == "amount" and unit not in (None, "fen", "yuan"):
            problems.append(
                Problem(item.at("partner_unit"), f"partner_unit must be fen or yuan, not {unit!r}")
            )
            continue
        required = item.get("required", False)
        if not isinstance(required, bool):
            problems.append(Problem(item.at("required"), "required must be true or false"))
            continue
        max_length = item.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
            problems.append(Problem(item.at("max_length"), "max_length must be a positive integer"))
            continue
        items: tuple[Rule, ...] = ()
        if kind == "list":
            items = build_rules(item.get("items"), tables, problems, loc)
        if local and partner:
            rules.append(
                Rule(
                    loc,
                    local,
                    partner,
                    kind,
                    required,
                    max_length,
                    table,
                    partner_format,
                    unit or ("fen" if kind == "amount" else None),
                    items,
                )
            )
    _check_collisions(rules, problems)
    return tuple(rules)


def _check_collisions(rules: list[Rule], problems: list[Problem]) -> None:
    """Two rules writing one field would make one direction lossy: refuse at load."""
    for side in ("local", "partner"):
        seen: dict[tuple[str, ...], Location] = {}
        for rule in rules:
            path = getattr(rule, side)
            if path is None or (
                side == "partner"
                and rule.local is None
                and rule.const is None
                and rule.derive is None
            ):
                continue
            if path in seen:
                problems.append(
                    Problem(
                        rule.where,
                        f"{side} field {'.'.join(path)} is already mapped at line {seen[path].line}",
                    )
                )
            else:
                seen[path] = rule.where
            for other, other_where in list(seen.items()):
                if other != path and (other[: len(path)] == path or path[: len(other)] == other):
                    problems.append(
                        Problem(
                            rule.where,
                            f"{side} field {'.'.join(path)} overlaps {'.'.join(other)} (line {other_where.line})",
                        )
                    )


def build_transform(
    name: str,
    document: Any,
    tables: dict[str, CodeTable],
    problems: list[Problem],
    where_: Location,
) -> Transform | None:
    from mappings.source import LocatedDict

    if not isinstance(document, LocatedDict):
        problems.append(Problem(where_, "a transform file must be a mapping"))
        return None
    for key in sorted(set(document) - {"transform", "description", "fields"}):
        problems.append(Problem(document.at(key), f"unknown key {key!r}"))
    if document.get("transform") != name:
        problems.append(
            Problem(document.at("transform"), f"transform: must be {name!r} (the file name)")
        )
    before = len(problems)
    rules = build_rules(document.get("fields"), tables, problems, document.location)
    if len(problems) > before:
        return None
    outbound, out_source = compile_direction(name, rules, tables, outbound=True)
    inbound, in_source = compile_direction(name, rules, tables, outbound=False)
    return Transform(
        name,
        str(document.get("description", "")),
        document.location,
        rules,
        outbound,
        inbound,
        out_source,
        in_source,
    )
