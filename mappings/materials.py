"""Materials (申请材料): what a matter asks the resident to bring, and the checks of what was given.

Declared per jurisdiction in ``mappings/data/materials/<region>.yaml``, keyed by the local matter
code::

    materials:
      XZ-YB-005:                         # the matter, as in the catalogue
        - code: invoice                  # unique within the matter
          name: 医疗费用发票
          required: true                 # default false
          types: [pdf, ofd, jpeg, png]   # what it may be, decided by its content
          max_mib: 20                    # default 20
          licence_type: "1100000002"     # a 证照类型代码 whose 电子证照 may stand in (免提交)

Pure functions and data: the shell reads the bytes, this decides. A material's type is told by
its first bytes, never by its name: PDF (``%PDF-``), PNG, JPEG, and OFD (GB/T 33190: a ZIP
package whose first entry is ``OFD.xml``, the layout every OFD writer produces).

An 电子证照 is named by its identifier (GB/T 36904 practice):
``1.2.156.3005.2.<证照类型代码>.<颁发机构 USCC>.<流水号>.<3-digit version>.<check>``, the check an
ISO 7064 MOD 37,36 character — computed here over the identifier's characters before it, the
dots left out (our reading of the practice: to be confirmed against an issuer's identifiers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mappings import identifiers
from mappings.source import LocatedDict, LocatedList, Location, Problem, where
from rules.materials import MATERIAL_CODE, MATERIAL_TYPES
from rules.text import is_code

DEFAULT_MAX_MIB = 20
LICENCE_TYPE_SHAPE = re.compile(r"[0-9A-Z]{1,32}", re.ASCII)  # 证照类型代码
LICENCE_PREFIX = "1.2.156.3005.2."
KEYS = {"code", "name", "required", "types", "max_mib", "licence_type"}
SNIFF_BYTES = 64  # enough of a file's beginning to tell its type


@dataclass(frozen=True)
class Material:
    code: str
    name: str
    required: bool
    types: tuple[str, ...]
    max_bytes: int
    licence_type: str | None  # 电子证照 of this type may stand in
    where: Location


@dataclass(frozen=True)
class GivenFile:
    """A material as uploaded: its type as sniffed from its content (None: not one we take)."""

    code: str
    kind: str | None
    size: int


@dataclass(frozen=True)
class GivenLicence:
    """An 电子证照 named instead of a file: its identifier, and the holder's 身份证号 or
    统一社会信用代码."""

    code: str
    identifier: str
    holder: str


def licence_type_of(identifier: str) -> str | None:
    """The 证照类型代码 an 电子证照 identifier carries, if the identifier is well made: the
    prefix, an issuer whose USCC checks, a 3-digit version, the MOD 37,36 check."""
    from stdnum.iso7064 import mod_37_36

    if not identifier.startswith(LICENCE_PREFIX):
        return None
    parts = identifier.removeprefix(LICENCE_PREFIX).split(".")
    if len(parts) != 5:
        return None
    licence_type, issuer, serial, version, check = parts
    if not (
        LICENCE_TYPE_SHAPE.fullmatch(licence_type)
        and re.fullmatch(r"[0-9A-Z]{1,32}", serial, re.ASCII)
        and re.fullmatch(r"[0-9]{3}", version, re.ASCII)
        and len(check) == 1
    ):
        return None
    try:
        identifiers.check_uscc(issuer)
    except identifiers.IdentifierError:
        return None
    body = identifier[: -len(check) - 1].replace(".", "")
    return licence_type if mod_37_36.calc_check_digit(body) == check else None


def make_licence_identifier(licence_type: str, issuer: str, serial: str, version: int) -> str:
    """An identifier with its check (SAMPLE data and tests)."""
    from stdnum.iso7064 import mod_37_36

    head = f"{LICENCE_PREFIX}{licence_type}.{issuer}.{serial}.{version:03d}"
    return f"{head}.{mod_37_36.calc_check_digit(head.replace('.', ''))}"


@dataclass(frozen=True)
class MaterialProblem:
    """One problem with what was given, located by the material's code (stable ``error``)."""

    material: str
    error: str  # MATERIAL_MISSING | MATERIAL_TYPE | MATERIAL_TOO_LARGE | MATERIAL_UNKNOWN | …
    message: str


def sniff(head: bytes) -> str | None:
    """A file's type from its first bytes (``SNIFF_BYTES`` suffice)."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    # ZIP local file header; the name starts at byte 30, its length at bytes 26–27
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        name_length = int.from_bytes(head[26:28], "little")
        if head[30 : 30 + name_length].lower() == b"ofd.xml":
            return "ofd"
    return None


def check_given(
    materials: tuple[Material, ...],
    files: list[GivenFile],
    licences: list[GivenLicence],
    case_limit_bytes: int,
) -> list[MaterialProblem]:
    """Every problem with what a filing gives, at once (empty: it may be filed)."""
    problems: list[MaterialProblem] = []
    by_code = {m.code: m for m in materials}
    seen: set[str] = set()
    given_codes = [f.code for f in files] + [licence.code for licence in licences]
    for code in given_codes:
        if code not in by_code:
            problems.append(
                MaterialProblem(code, "MATERIAL_UNKNOWN", f"这个事项没有名为 {code} 的材料")
            )
        elif code in seen:
            problems.append(MaterialProblem(code, "MATERIAL_REPEATED", "同一材料只能提交一次"))
        seen.add(code)
    for file in files:
        material = by_code.get(file.code)
        if material is None:
            continue
        if file.kind is None or file.kind not in material.types:
            allowed = "、".join(t.upper() for t in material.types)
            problems.append(
                MaterialProblem(
                    file.code, "MATERIAL_TYPE", f"{material.name}须为 {allowed} 文件（按内容判断）"
                )
            )
        if file.size > material.max_bytes:
            problems.append(
                MaterialProblem(
                    file.code,
                    "MATERIAL_TOO_LARGE",
                    f"{material.name}超过 {material.max_bytes // (1024 * 1024)} MiB",
                )
            )
        if file.size == 0:
            problems.append(
                MaterialProblem(file.code, "MATERIAL_EMPTY", f"{material.name}是空文件")
            )
    for licence in licences:
        material = by_code.get(licence.code)
        if material is None:
            continue
        if material.licence_type is None:
            problems.append(
                MaterialProblem(
                    licence.code, "LICENCE_NOT_ACCEPTED", f"{material.name}不能以电子证照代替"
                )
            )
        else:
            found = licence_type_of(licence.identifier)
            if found is None:
                problems.append(
                    MaterialProblem(
                        licence.code, "LICENCE_IDENTIFIER", "电子证照标识格式或校验位不正确"
                    )
                )
            elif found != material.licence_type:
                problems.append(
                    MaterialProblem(
                        licence.code,
                        "LICENCE_TYPE",
                        f"{material.name}须为证照类型 {material.licence_type} 的电子证照",
                    )
                )
        if not _holder_ok(licence.holder):
            problems.append(
                MaterialProblem(
                    licence.code,
                    "LICENCE_HOLDER",
                    "持证主体须为有效的公民身份号码或统一社会信用代码",
                )
            )
    for material in materials:
        if material.required and material.code not in seen:
            problems.append(
                MaterialProblem(
                    material.code,
                    "MATERIAL_MISSING",
                    f"缺少必需材料：{material.name}"
                    + ("（或其电子证照）" if material.licence_type else ""),
                )
            )
    if sum(f.size for f in files) > case_limit_bytes:
        problems.append(
            MaterialProblem(
                "*",
                "MATERIALS_TOO_LARGE",
                f"材料合计超过 {case_limit_bytes // (1024 * 1024)} MiB",
            )
        )
    return problems


def _holder_ok(holder: str) -> bool:
    for check in (identifiers.check_resident_id, identifiers.check_uscc):
        try:
            check(holder)
        except identifiers.IdentifierError:
            continue
        return True
    return False


def build_materials(
    document: Any, matter_codes: set[str], problems: list[Problem], fallback: Location
) -> dict[str, tuple[Material, ...]]:
    """A ``materials:`` document: each matter's materials (every problem located)."""
    result: dict[str, tuple[Material, ...]] = {}
    if not isinstance(document, LocatedDict) or not isinstance(
        document.get("materials"), LocatedDict
    ):
        problems.append(
            Problem(where(document, fallback=fallback), "expected 'materials:' by matter code")
        )
        return result
    listed: LocatedDict = document["materials"]
    for matter_code, items in listed.items():
        at = listed.at(matter_code)
        if matter_code not in matter_codes:
            problems.append(Problem(at, f"matter {matter_code} is not in this catalogue"))
            continue
        if not isinstance(items, LocatedList):
            problems.append(Problem(at, "a matter's materials are a list"))
            continue
        made: list[Material] = []
        for raw in items:
            material = _material(raw, at, problems)
            if material is None:
                continue
            if any(m.code == material.code for m in made):
                problems.append(
                    Problem(material.where, f"material {material.code} is listed twice")
                )
                continue
            made.append(material)
        result[matter_code] = tuple(made)
    return result


def _material(raw: Any, fallback: Location, problems: list[Problem]) -> Material | None:
    at = where(raw, fallback=fallback)
    if not isinstance(raw, LocatedDict):
        problems.append(Problem(at, "a material must be a mapping"))
        return None
    found = len(problems)
    for key in sorted(set(raw) - KEYS):
        problems.append(Problem(raw.at(key), f"unknown material key {key!r}"))
    code, name = str(raw.get("code", "")), str(raw.get("name", "")).strip()
    if not is_code(MATERIAL_CODE, code):
        problems.append(
            Problem(raw.at("code"), f"material code {code!r}: lower-case letters, digits, - and _")
        )
    if not name:
        problems.append(Problem(raw.at("name"), "a material needs a name"))
    required = raw.get("required", False)
    if not isinstance(required, bool):
        problems.append(Problem(raw.at("required"), "required is true or false"))
    types = raw.get("types")
    if not isinstance(types, list) or not types or any(t not in MATERIAL_TYPES for t in types):
        problems.append(Problem(raw.at("types"), f"types: a list of {', '.join(MATERIAL_TYPES)}"))
        types = []
    max_mib = raw.get("max_mib", DEFAULT_MAX_MIB)
    if type(max_mib) is not int or not 1 <= max_mib <= 1024:
        problems.append(Problem(raw.at("max_mib"), "max_mib: a whole number from 1 to 1024"))
        max_mib = DEFAULT_MAX_MIB
    licence = raw.get("licence_type")
    if licence is not None and not LICENCE_TYPE_SHAPE.fullmatch(str(licence)):
        problems.append(
            Problem(raw.at("licence_type"), "licence_type: a 证照类型代码 (digits and capitals)")
        )
    if len(problems) > found:
        return None
    return Material(
        code,
        name,
        bool(required),
        tuple(str(t) for t in types),
        max_mib * 1024 * 1024,
        None if licence is None else str(licence),
        at,
    )
