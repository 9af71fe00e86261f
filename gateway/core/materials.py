"""A case's materials (申请材料): what its filing must give, and which go to which sub-matter.

Pure functions over the catalogue's materials (``mappings.materials``). A 一件事 bundle's
sub-matters may ask for the same material (the 居民身份证 of a 社保转入): the resident gives it
once, and every sub-matter that asks for it carries it ("一次办"). A material's code means the
same thing across the matters of one catalogue; each matter's own rules (types, size, whether an
电子证照 may stand in) are checked for what it will carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mappings.materials import GivenFile, GivenLicence, MaterialProblem, check_given
from mappings.registry import Registry


@dataclass(frozen=True)
class CaseMaterials:
    """What a filing gives: files (sniffed, sized) and e-licence references."""

    files: tuple[GivenFile, ...] = ()
    licences: tuple[GivenLicence, ...] = ()

    @property
    def codes(self) -> set[str]:
        return {f.code for f in self.files} | {licence.code for licence in self.licences}


def problems_of(
    registry: Registry,
    region: str,
    matters: Iterable[str],
    given: CaseMaterials,
    case_limit_bytes: int,
) -> list[MaterialProblem]:
    """Every problem with a filing's materials for its sub-matters' ``matters``, each once
    (empty: it may be filed)."""
    problems: list[MaterialProblem] = []
    asked: set[str] = set()
    for matter in dict.fromkeys(matters):
        materials = registry.materials_of(region, matter)
        codes = {m.code for m in materials}
        asked |= codes
        problems += check_given(
            materials,
            [f for f in given.files if f.code in codes],
            [licence for licence in given.licences if licence.code in codes],
            case_limit_bytes,
        )
    given_codes = [f.code for f in given.files] + [licence.code for licence in given.licences]
    for code in sorted(set(given_codes) - asked):
        problems.append(MaterialProblem(code, "MATERIAL_UNKNOWN", f"本件没有名为 {code} 的材料"))
    for code in sorted({c for c in given_codes if given_codes.count(c) > 1}):
        problems.append(MaterialProblem(code, "MATERIAL_REPEATED", "同一材料只能提交一次"))
    if sum(f.size for f in given.files) > case_limit_bytes:
        problems.append(
            MaterialProblem(
                "*", "MATERIALS_TOO_LARGE", f"材料合计超过 {case_limit_bytes // (1024 * 1024)} MiB"
            )
        )
    return _once(problems)


def codes_for(registry: Registry, region: str, matter: str) -> frozenset[str]:
    """The material codes a sub-matter of this matter carries to its partner."""
    return frozenset(m.code for m in registry.materials_of(region, matter))


def _once(problems: list[MaterialProblem]) -> list[MaterialProblem]:
    """Each (material, error) once: per-matter checks repeat what the case-wide checks say."""
    kept: dict[tuple[str, str], MaterialProblem] = {}
    for problem in problems:
        kept.setdefault((problem.material, problem.error), problem)
    return list(kept.values())
