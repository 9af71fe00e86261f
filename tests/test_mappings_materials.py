"""Materials (mappings/materials.py): a type told by content, every problem of a filing's
materials at once, an 电子证照 standing in where the catalogue allows."""

from __future__ import annotations

import pytest

from mappings.identifiers import make_uscc
from mappings.materials import (
    GivenFile,
    GivenLicence,
    Material,
    check_given,
    licence_type_of,
    make_licence_identifier,
    sniff,
)
from mappings.registry import load_registry
from mappings.source import Location

MIB = 1024 * 1024
HERE = Location("test", 1)
ID_CARD = "1100000001"  # a SAMPLE 证照类型代码
ISSUER = make_uscc("11", "420607", "17410101")  # SAMPLE issuer
PERSON = "411329198506150034"  # SAMPLE 身份证号 (valid check digit)


def _ofd_head() -> bytes:
    name = b"OFD.xml"
    return b"PK\x03\x04" + bytes(22) + len(name).to_bytes(2, "little") + bytes(2) + name


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"%PDF-1.7\n%\xe2\xe3", "pdf"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (_ofd_head(), "ofd"),
        (b"PK\x03\x04" + bytes(22) + (5).to_bytes(2, "little") + bytes(2) + b"a.doc", None),
        (b"MZ\x90\x00", None),  # an executable named invoice.pdf
        (b"%PD", None),
        (b"", None),
    ],
)
def test_a_files_type_is_told_by_its_first_bytes(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def _materials() -> tuple[Material, ...]:
    return (
        Material("id-card", "居民身份证", True, ("pdf", "jpeg"), 5 * MIB, ID_CARD, HERE),
        Material("invoices", "医疗费用发票", True, ("pdf", "ofd"), 20 * MIB, None, HERE),
        Material("cost-list", "费用明细清单", False, ("pdf",), 20 * MIB, None, HERE),
    )


def test_what_a_matter_asks_for_given_is_no_problem() -> None:
    files = [GivenFile("id-card", "jpeg", 300_000), GivenFile("invoices", "ofd", 2 * MIB)]
    assert check_given(_materials(), files, [], 100 * MIB) == []
    licence = make_licence_identifier(ID_CARD, ISSUER, "2026000123", 1)
    assert licence_type_of(licence) == ID_CARD
    instead = [GivenLicence("id-card", licence, PERSON)]  # 免提交: the 电子证照 stands in
    assert check_given(_materials(), files[1:], instead, 100 * MIB) == []


def test_every_problem_is_told_at_once() -> None:
    files = [
        GivenFile("invoices", None, 1000),  # not a type we take
        GivenFile("cost-list", "pdf", 21 * MIB),  # too large
        GivenFile("cost-list", "pdf", 10),  # twice
        GivenFile("photo", "png", 10),  # not asked for
    ]
    problems = check_given(_materials(), files, [], 20 * MIB)
    assert {(p.material, p.error) for p in problems} == {
        ("invoices", "MATERIAL_TYPE"),
        ("cost-list", "MATERIAL_TOO_LARGE"),
        ("cost-list", "MATERIAL_REPEATED"),
        ("photo", "MATERIAL_UNKNOWN"),
        ("id-card", "MATERIAL_MISSING"),
        ("*", "MATERIALS_TOO_LARGE"),
    }
    missing = next(p for p in problems if p.error == "MATERIAL_MISSING")
    assert missing.message == "缺少必需材料：居民身份证（或其电子证照）"


def test_an_electronic_licence_is_checked_before_it_stands_in() -> None:
    good = make_licence_identifier(ID_CARD, ISSUER, "2026000123", 1)
    other_type = make_licence_identifier("1100000002", ISSUER, "2026000123", 1)
    broken = good[:-1] + ("0" if good[-1] != "0" else "1")  # the check character changed
    licences = [
        GivenLicence("id-card", broken, PERSON),
        GivenLicence("invoices", good, PERSON),  # invoices have no 电子证照
    ]
    errors = {(p.material, p.error) for p in check_given(_materials(), [], licences, MIB)}
    assert ("id-card", "LICENCE_IDENTIFIER") in errors
    assert ("invoices", "LICENCE_NOT_ACCEPTED") in errors
    wrong = check_given(_materials()[:1], [], [GivenLicence("id-card", other_type, "123")], MIB)
    assert {p.error for p in wrong} == {"LICENCE_TYPE", "LICENCE_HOLDER"}
    assert licence_type_of("1.2.156.3005.2.X") is None
    assert licence_type_of(good.replace(ISSUER, "91420607MA0000000X")) is None  # issuer's check


def test_the_packaged_materials_are_the_matters_own() -> None:
    registry = load_registry()
    reimbursement = registry.materials_of("420607", "XZ-YB-006")
    assert [m.code for m in reimbursement if m.required] == ["invoices"]
    assert [m.code for m in reimbursement if m.licence_type] == ["invoices"]  # 电子票据
    assert registry.materials_of("420607", "XZ-GA-001") == ()  # none declared
