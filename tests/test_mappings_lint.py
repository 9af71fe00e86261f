"""`xgw mappings lint` finds a seeded error of each kind and says file:line; import is all or nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mappings.registry import lint
from tests.conftest import run_xgw, xgw_env
from tests.mapping_helpers import DATA, write_copy


def _seed(folder: Path, relative: str, old: str, new: str) -> None:
    path = folder / relative
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _line_of(folder: Path, relative: str, needle: str) -> int:
    """The last line holding ``needle`` (a seeded duplicate comes after the original)."""
    lines = (folder / relative).read_text(encoding="utf-8").splitlines()
    found = [number for number, line in enumerate(lines, 1) if needle in line]
    assert found, needle
    return found[-1]


SEEDS = [
    # (file, old, new, the line holding this text, message pattern)
    (
        "transforms/pension_contact_letter.yaml",
        "type: resident_id",
        "type: resident_idd",
        "type: resident_idd",
        r"unknown type 'resident_idd'",
    ),
    (
        "transforms/school_transfer.yaml",
        "max_length: 30",
        "maxlength: 30",
        "maxlength: 30",
        r"unknown rule key 'maxlength'",
    ),
    (
        "transforms/medical_reimbursement.yaml",
        "table: medical_type",
        "table: medical_types",
        "table: medical_types",
        r"needs a known table",
    ),
    (
        "transforms/housing_fund_transfer.yaml",
        "partner_unit: fen",
        "partner_unit: jiao",
        "partner_unit: jiao",
        r"partner_unit must be fen or yuan",
    ),
    (
        "transforms/household_migration.yaml",
        "partner: qrdz",
        "partner: qrdxzqh",
        "partner: qrdxzqh\n    type: string",
        r"partner field qrdxzqh is already mapped",
    ),
    (
        "codes.yaml",
        'female: "2"',
        'female: "1"',
        'female: "1"',
        r"code '1' is used for both 'male' and 'female'",
    ),
    (
        "mapping-sets/420607-411329/2026.1.yaml",
        "transform: school_transfer",
        "transform: school_transfers",
        "transform: school_transfers",
        r"unknown transform",
    ),
    (
        "mapping-sets/420607-411329/2026.1.yaml",
        "partner: XY-GA-003",
        "partner: XY-GA-999",
        "partner: XY-GA-999",
        r"partner code XY-GA-999 is not in the catalogue of 411329",
    ),
    (
        "mapping-sets/420607-411329/2026.1.yaml",
        "local: XZ-JY-002",
        "local: XZ-JY-999",
        "local: XZ-JY-999",
        r"local code XZ-JY-999 is not in the catalogue of 420607",
    ),
    (
        "mapping-sets/420607-411329/2026.1.yaml",
        '    inbound_when: {field: dcla_type, equals: "2"}\n',
        "",
        "local: XZ-YB-002",
        r"partner code XY-YB-001 maps back to XZ-YB-001, XZ-YB-002",
    ),
    (
        "mapping-sets/420607-411329/2027.1.yaml",
        "effective_from: 2027-01-01",
        "effective_from: 2026-12-01",
        "version:",
        r"version 2027.1 overlaps 2026.1",
    ),
    (
        "bundles/420607.yaml",
        "depends_on: [registration]",
        "depends_on: [registrations]",
        "depends_on: [registrations]",
        r"depends on 'registrations'",
    ),
    (
        "bundles/420607.yaml",
        'route: {jurisdiction: "420607"}',
        'route: {jurisdiction: "420608"}',
        "420608",
        r"unknown jurisdiction 420608",
    ),
    (
        "transforms/generic_application.yaml",
        "  - local: applicant.name",
        "  - local: applicant.name\n  bad: [",
        "bad: [",
        r"YAML",
    ),
    (
        "materials/420607.yaml",
        "      types: [pdf, ofd]",
        "      types: [pdf, docx]",
        "types: [pdf, docx]",
        r"types: a list of pdf, ofd, jpeg, png",
    ),
    (
        "materials/420607.yaml",
        "  XZ-ZJ-001:",
        "  XZ-ZJ-999:",
        "XZ-ZJ-999:",
        r"matter XZ-ZJ-999 is not in this catalogue",
    ),
    (
        "materials/420607.yaml",
        "    - code: cost-list",
        "    - code: invoices",
        "    - code: invoices\n      name: 费用明细清单",
        r"material invoices is listed twice",
    ),
]


@pytest.mark.parametrize(
    ("relative", "old", "new", "needle", "message"),
    SEEDS,
    ids=[f"{s[0]}:{s[4][:24]}" for s in SEEDS],
)
def test_lint_locates_each_seeded_error(
    tmp_path: Path, relative: str, old: str, new: str, needle: str, message: str
) -> None:
    folder = write_copy(tmp_path / "data")
    _seed(folder, relative, old, new)
    problems = lint(folder)
    assert problems, "lint found nothing"
    matching = [p for p in problems if re.search(message, p.message)]
    assert matching, [str(p) for p in problems]
    located = matching[0]
    assert located.where.file.endswith(relative)
    expected_line = _line_of(folder, relative, needle.split("\n")[0])
    if relative.endswith(".yaml") and "YAML" not in message and "overlaps" not in message:
        assert abs(located.where.line - expected_line) <= 1, (str(located), expected_line)


def test_catalogue_rows_are_checked_with_line_numbers(tmp_path: Path) -> None:
    folder = write_copy(tmp_path / "data")
    path = folder / "catalogue" / "411329.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    fields = lines[4].split(",")
    fields[1] = fields[1][:-1] + ("1" if fields[1][-1] != "1" else "2")  # breaks 基本编码 suffix
    lines[4] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = lint(folder)
    assert any(
        p.where.line == 5 and p.where.file.endswith("411329.csv") and "基本编码" in p.message
        for p in problems
    ), [str(p) for p in problems]


def test_lint_command_prints_every_problem_and_fails(tmp_path: Path) -> None:
    folder = write_copy(tmp_path / "data")
    _seed(folder, *SEEDS[0][:3])
    _seed(folder, *SEEDS[5][:3])
    result = run_xgw("mappings", "lint", str(folder), env=xgw_env(tmp_path / "var"))
    assert result.returncode == 1
    out = result.stdout.decode()
    assert re.search(r"pension_contact_letter.yaml:\d+: unknown type", out)
    assert re.search(r"codes.yaml:\d+: table sex", out)
    ok = run_xgw("mappings", "lint", env=xgw_env(tmp_path / "var"))
    assert ok.returncode == 0 and ok.stdout.startswith(b"ok: 5 jurisdictions")


def test_explain_shows_condition_transform_and_example(tmp_path: Path) -> None:
    result = run_xgw(
        "mappings", "explain", "XZ-SB-001", "--on", "2026-12-01", env=xgw_env(tmp_path / "var")
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert (
        "XY-SB-001 企业职工基本养老保险关系转移接续 when pension.scheme == 'urban_employee'" in out
    )
    assert (
        "XY-SB-002 城乡居民基本养老保险关系转移接续 when pension.scheme == 'urban_rural_resident'"
        in out
    )
    assert "applicant.id_number ⇄ aac002" in out
    assert '"aae140": "110"' in out  # the example transformation
    assert "material id-card 居民身份证: required, pdf/jpeg/png up to 5 MiB, or its 电子证照" in out
    assert run_xgw("mappings", "explain", "NOPE", env=xgw_env(tmp_path / "var")).returncode == 1


def _csv(rows: list[str]) -> str:
    return (
        (DATA / "catalogue" / "421300.csv").read_text(encoding="utf-8").splitlines()[0]
        + "\n"
        + "\n".join(rows)
        + "\n"
    )


def test_import_all_or_nothing(tmp_path: Path) -> None:
    env = xgw_env(tmp_path / "var")
    rows = (DATA / "catalogue" / "421300.csv").read_text(encoding="utf-8").splitlines()[1:]
    good = tmp_path / "good.csv"
    good.write_text(_csv(rows), encoding="utf-8")
    result = run_xgw("mappings", "import", str(good), "--region", "421300", env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert b"imported 126 matters" in result.stdout
    assert b"importing good.csv: 126/126 (100%)" in result.stderr  # progress
    imported = tmp_path / "var" / "mappings" / "catalogue" / "421300.csv"
    assert imported.exists()

    broken = list(rows)
    type_fields = broken[9].split(",")
    type_fields[5] = "公共福利"  # not a national 事项类型
    broken[9] = ",".join(type_fields)
    fields = broken[19].split(",")
    fields[4] = fields[4][:-1] + ("0" if fields[4][-1] != "0" else "1")
    broken[19] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text(_csv(broken), encoding="utf-8")
    before = imported.read_bytes()
    result = run_xgw("mappings", "import", str(bad), "--region", "421300", env=env)
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "nothing was imported" in out
    assert re.search(r"bad.csv:11: .*事项类型", out) and re.search(r"bad.csv:21: ", out)
    assert imported.read_bytes() == before

    missing = tmp_path / "missing.csv"  # drops a matter the mapping set still uses
    missing.write_text(_csv(rows[1:]), encoding="utf-8")
    result = run_xgw("mappings", "import", str(missing), "--region", "421300", env=env)
    assert result.returncode == 1
    assert b"would break" in result.stdout and b"SZ-GA-001" in result.stdout
    assert imported.read_bytes() == before
