"""The matter catalogue (政务服务事项) of each jurisdiction, and 一件事 bundles.

Catalogues are CSV with the national platform's export columns (plus a few of ours), so an
operator's real export can be imported as is (``xgw mappings import``):

    基本编码, 实施编码, 事项名称, 实施主体, 实施主体编码, 事项类型, 行使层级, 本地编码, 领域, 办理部门, 跨省通办
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mappings import identifiers
from mappings.source import LocatedDict, LocatedList, Location, Problem, where
from rules.text import is_code, text_problem

COLUMNS = (
    "基本编码",
    "实施编码",
    "事项名称",
    "实施主体",
    "实施主体编码",
    "事项类型",
    "行使层级",
    "本地编码",
    "领域",
    "办理部门",
    "跨省通办",
)
REQUIRED_COLUMNS = COLUMNS[:7]
MATTER_TYPES = frozenset(
    {
        "行政许可",
        "行政处罚",
        "行政强制",
        "行政征收",
        "行政给付",
        "行政检查",
        "行政确认",
        "行政奖励",
        "行政裁决",
        "其他行政权力",
        "公共服务",
    }
)
LEVEL_NAMES = {v: k for k, v in identifiers.LEVELS.items()}
YES = {"是", "Y", "y", "yes", "true", "1"}
NO = {"否", "N", "n", "no", "false", "0", ""}


@dataclass(frozen=True)
class Matter:
    """One 政务服务事项 as one jurisdiction implements it."""

    region: str
    basic_code: str  # 基本编码 (12)
    implementation_code: str  # 实施编码 (31)
    name: str
    agency: str  # 实施主体
    agency_code: str  # 实施主体编码 (USCC)
    matter_type: str  # 事项类型
    level: str  # 行使层级 1–5
    local_code: str  # 本地编码 (provincial catalogue code); the implementation code if none
    domain: str  # 领域: 公安 / 教育 / 医保 / 社保 / 住建 / …
    department: str  # 办理部门
    cross_province: bool  # open for 跨省通办
    where: Location = field(compare=False)

    @property
    def codes(self) -> tuple[str, ...]:
        return (self.local_code, self.implementation_code)


@dataclass
class Catalogue:
    region: str
    matters: list[Matter]
    by_code: dict[str, Matter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for matter in self.matters:
            for code in matter.codes:
                self.by_code[code] = matter

    def get(self, code: str) -> Matter | None:
        return self.by_code.get(code)


@dataclass(frozen=True)
class Route:
    """Which jurisdiction handles a sub-matter: a fixed one, or the region in a payload field."""

    jurisdiction: str | None = None
    field_path: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.jurisdiction is not None:
            return f"always {self.jurisdiction}"
        return f"the region code in field {'.'.join(self.field_path or ())}"


@dataclass(frozen=True)
class SubMatter:
    id: str
    matter: str  # the local matter code
    route: Route
    depends_on: tuple[str, ...]
    kind: str  # request | answer (the partner sends something back)
    where: Location
    route_where: Location
    request_transform: str | None = None  # kind answer: what our request carries


@dataclass(frozen=True)
class Bundle:
    """一件事: an ordered list of sub-matters, done when all are done."""

    code: str
    name: str
    region: str
    domain: str
    sub_matters: tuple[SubMatter, ...]
    where: Location


LOCAL_CODE_SHAPE = r"[A-Za-z0-9._-]{1,64}"  # what an envelope's matter may hold


def _row_problems(row: dict[str, str]) -> tuple[Matter | None, list[str]]:
    reasons: list[str] = []
    for column in REQUIRED_COLUMNS:
        if not (row.get(column) or "").strip():
            reasons.append(f"{column} is empty")
    if reasons:
        return None, reasons
    basic, code = row["基本编码"].strip(), row["实施编码"].strip()
    level = row["行使层级"].strip()
    level = LEVEL_NAMES.get(level, level)
    checks: list[Callable[[], str]] = [
        lambda: identifiers.check_basic_code(basic),
        lambda: identifiers.check_implementation_code(code, basic),
        lambda: identifiers.check_uscc(row["实施主体编码"].strip()),
    ]
    for check in checks:
        try:
            check()
        except identifiers.IdentifierError as exc:
            reasons.append(str(exc))
    if not reasons and code[:18] != row["实施主体编码"].strip():
        reasons.append("实施编码 does not start with 实施主体编码")
    if level not in identifiers.LEVELS:
        reasons.append(f"行使层级 {row['行使层级']!r} is not 1–5 or 国家级…乡级")
    elif not reasons and code[18] != level:
        reasons.append(f"行使层级 {level} differs from the level in 实施编码 ({code[18]})")
    if row["事项类型"].strip() not in MATTER_TYPES:
        reasons.append(f"事项类型 {row['事项类型']!r} is not one of the national types")
    local = (row.get("本地编码") or "").strip()
    if local and not is_code(LOCAL_CODE_SHAPE, local):
        reasons.append(f"本地编码 {local!r} is not 1–64 ASCII letters, digits, '.', '_' or '-'")
    for column, value in row.items():
        problem = text_problem(value or "") if column is not None else None
        if problem:
            reasons.append(f"{column} {problem}")
    cross = (row.get("跨省通办") or "").strip()
    if cross not in YES | NO:
        reasons.append(f"跨省通办 {cross!r} must be 是 or 否")
    if reasons:
        return None, reasons
    return (
        Matter(
            region="",
            basic_code=basic,
            implementation_code=code,
            name=row["事项名称"].strip(),
            agency=row["实施主体"].strip(),
            agency_code=row["实施主体编码"].strip(),
            matter_type=row["事项类型"].strip(),
            level=level,
            local_code=(row.get("本地编码") or "").strip() or code,
            domain=(row.get("领域") or "").strip() or "其他",
            department=(row.get("办理部门") or "").strip() or row["实施主体"].strip(),
            cross_province=cross in YES,
            where=Location("", 0),
        ),
        [],
    )


@dataclass
class CsvResult:
    matters: list[Matter]
    rejected: list[Problem]
    rows: int


def iter_catalogue_csv(
    text: str, source: str, region: str
) -> Iterator[tuple[int, Matter | None, Problem | None]]:
    """Yield (line, matter, problem) per data row; a missing column is one problem at line 1."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        yield 1, None, Problem(Location(source, 1), f"missing columns: {', '.join(missing)}")
        return
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        matter, reasons = _row_problems(row)
        if matter is not None:
            for code in {matter.local_code, matter.implementation_code}:
                if code in seen:
                    reasons.append(f"code {code} already used on line {seen[code]}")
            if not reasons:
                for code in matter.codes:
                    seen[code] = line
        if reasons:
            yield line, None, Problem(Location(source, line), "; ".join(reasons))
        else:
            assert matter is not None
            yield line, _place(matter, region, Location(source, line)), None


def _place(matter: Matter, region: str, loc: Location) -> Matter:
    return Matter(**{**matter.__dict__, "region": region, "where": loc})


def parse_catalogue_csv(text: str, source: str, region: str) -> CsvResult:
    matters, rejected, rows = [], [], 0
    for _line, matter, problem in iter_catalogue_csv(text, source, region):
        rows += 1
        if matter is not None:
            matters.append(matter)
        if problem is not None:
            rejected.append(problem)
    return CsvResult(matters, rejected, rows)


def render_catalogue_csv(matters: list[Matter]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for m in matters:
        writer.writerow(
            [
                m.basic_code,
                m.implementation_code,
                m.name,
                m.agency,
                m.agency_code,
                m.matter_type,
                m.level,
                m.local_code,
                m.domain,
                m.department,
                "是" if m.cross_province else "否",
            ]
        )
    return out.getvalue()


# -- bundles -----------------------------------------------------------------------------------


def build_bundles(
    document: Any, region: str, problems: list[Problem], fallback: Location
) -> list[Bundle]:
    from mappings.transform import _path

    bundles: list[Bundle] = []
    if not isinstance(document, LocatedDict) or not isinstance(
        document.get("bundles"), LocatedList
    ):
        problems.append(Problem(where(document, fallback=fallback), "expected 'bundles:' list"))
        return bundles
    for raw in document["bundles"]:
        loc = where(raw, fallback=fallback)
        if not isinstance(raw, LocatedDict):
            problems.append(Problem(loc, "a bundle must be a mapping"))
            continue
        for key in sorted(set(raw) - {"code", "name", "domain", "sub_matters", "description"}):
            problems.append(Problem(raw.at(key), f"unknown bundle key {key!r}"))
        subs: list[SubMatter] = []
        ids: set[str] = set()
        for sub in raw.get("sub_matters") or []:
            sloc = where(sub, fallback=loc)
            if not isinstance(sub, LocatedDict):
                problems.append(Problem(sloc, "a sub-matter must be a mapping"))
                continue
            for key in sorted(
                set(sub) - {"id", "matter", "route", "depends_on", "kind", "request_transform"}
            ):
                problems.append(Problem(sub.at(key), f"unknown sub-matter key {key!r}"))
            sub_id = str(sub.get("id", ""))
            if not sub_id or sub_id in ids:
                problems.append(
                    Problem(sub.at("id"), f"sub-matter id {sub_id!r} missing or repeated")
                )
                continue
            depends = tuple(str(d) for d in (sub.get("depends_on") or []))
            for dep in depends:
                if dep not in ids:
                    problems.append(
                        Problem(
                            sub.at("depends_on"),
                            f"depends on {dep!r}, which is not an earlier sub-matter",
                        )
                    )
            ids.add(sub_id)
            route_raw = sub.get("route")
            route: Route | None = None
            if isinstance(route_raw, LocatedDict) and set(route_raw) == {"jurisdiction"}:
                route = Route(jurisdiction=str(route_raw["jurisdiction"]))
            elif isinstance(route_raw, LocatedDict) and set(route_raw) == {"field"}:
                path = _path(route_raw["field"], route_raw.at("field"), problems, "route field")
                route = Route(field_path=path) if path else None
            else:
                problems.append(
                    Problem(sub.at("route"), "route must be {jurisdiction: CODE} or {field: PATH}")
                )
            if route is None:
                continue
            subs.append(
                SubMatter(
                    sub_id,
                    str(sub.get("matter", "")),
                    route,
                    depends,
                    str(sub.get("kind", "request")),
                    sloc,
                    sub.at("route"),
                    str(sub["request_transform"]) if sub.get("request_transform") else None,
                )
            )
        if not subs:
            problems.append(Problem(loc, "a bundle needs at least one sub-matter"))
            continue
        bundles.append(
            Bundle(
                str(raw.get("code", "")),
                str(raw.get("name", "")),
                region,
                str(raw.get("domain", "")),
                tuple(subs),
                loc,
            )
        )
    return bundles
