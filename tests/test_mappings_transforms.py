"""Schema transforms: bundles end to end, round trips, bad payloads, every matter covered."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappings.mapping import MappingError
from mappings.transform import Rule, TransformError
from tests.mapping_helpers import REGISTRY, example, local_payloads

ON = date(2026, 11, 28)
XZ, XY = "420607", "411329"


def _mapped_view(rules: tuple[Rule, ...], payload: dict[str, Any]) -> dict[str, Any]:
    """The part of a local payload that the rules map (what a round trip must preserve)."""
    view: dict[str, Any] = {}
    for rule in rules:
        if rule.local is None or rule.const is not None or rule.derive is not None:
            continue
        value: Any = payload
        for part in rule.local:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if rule.type == "list":
            value = [_mapped_view(rule.items, row) for row in value]
        target = view
        for part in rule.local[:-1]:
            target = target.setdefault(part, {})
        target[rule.local[-1]] = value
    return view


def _bundle_form(code: str) -> dict[str, Any]:
    forms = {
        "YJS-SBZR": ["pension_contact_letter", "generic_application", "housing_fund_transfer"],
        "YJS-YLBX": ["medical_registration", "medical_reimbursement"],
        "YJS-HKQY": ["household_migration", "generic_application"],
        "YJS-XJZJ": ["school_transfer"],
        "YJS-GJJZY": ["housing_fund_transfer", "generic_application"],
    }
    form: dict[str, Any] = {}
    for name in forms[code]:
        for key, value in example(name).items():
            form.setdefault(key, {}).update(value)
    return form


@pytest.mark.parametrize("code", sorted(REGISTRY.bundles))
def test_every_bundle_end_to_end(code: str) -> None:
    bundle = REGISTRY.bundles[code]
    form = _bundle_form(code)
    crossed = 0
    for sub in bundle.sub_matters:
        region = REGISTRY.route(sub, form)
        if region == bundle.region:
            continue  # handled here, no mapping
        crossed += 1
        resolution = REGISTRY.resolve(bundle.region, region, sub.matter, form, ON)
        transform = REGISTRY.transforms[resolution.transform]
        if sub.kind == "answer":
            # the partner answers in its schema; we map it back to ours
            answer = transform.outbound(example(resolution.transform))
            assert REGISTRY.to_local(resolution, answer) == _mapped_view(
                transform.rules, example(resolution.transform)
            )
            continue
        partner_payload = REGISTRY.to_partner(resolution, form)
        assert REGISTRY.to_local(resolution, partner_payload) == _mapped_view(transform.rules, form)
        inbound = REGISTRY.resolve_inbound(
            bundle.region, region, resolution.partner_code, partner_payload, ON
        )
        assert inbound.local_code == sub.matter
    assert crossed >= 1


def test_pension_contact_letter_speaks_the_renshe_dictionary() -> None:
    form = _bundle_form("YJS-SBZR")
    resolution = REGISTRY.resolve(XZ, XY, "XZ-SB-001", form, ON)
    assert resolution.partner_code == "XY-SB-001"  # 城镇职工 → 企业职工基本养老保险关系转移接续
    letter = REGISTRY.to_partner(resolution, form)
    assert letter["aac002"] == "411329198506150034"
    assert letter["aac003"] == "王建国"
    assert letter["aac004"] == "1"  # derived from the 身份证号: male
    assert letter["aac006"] == "19850615"
    assert letter["aae140"] == "110"
    assert letter["aab299"] == "420607" and letter["aab301"] == "411329"
    assert letter["aae270"] == "LXH-420607-2026-000123"
    assert letter["aae036"] == "20261120"
    resident = copy.deepcopy(form)
    resident["pension"]["scheme"] = "urban_rural_resident"
    assert REGISTRY.resolve(XZ, XY, "XZ-SB-001", resident, ON).partner_code == "XY-SB-002"
    resident["pension"]["scheme"] = "public_institution"
    with pytest.raises(MappingError) as info:
        REGISTRY.resolve(XZ, XY, "XZ-SB-001", resident, ON)
    assert info.value.code == "MATTER_CONDITION_UNMET" and "XZ-SB-001" in info.value.message


def test_information_form_rows_and_amounts() -> None:
    transform = REGISTRY.transforms["pension_information_form"]
    local = example("pension_information_form")
    partner = transform.outbound(local)
    assert len(partner["ac20"]) == 20
    first = partner["ac20"][0]
    assert first == {
        "aae001": 2006,
        "aae041": "200601",
        "aae042": "200612",
        "aae180": 200000,
        "aae202": 12,
        "aae022": 192000,
        "aae020": 384000,
    }
    assert partner["aic083"] == 4567890 and partner["aac049"] == "200601"
    assert transform.inbound(partner) == local


AMOUNT_LIKE = st.one_of(
    st.from_regex(r"-?[0-9]{0,15}(\.[0-9]{0,3})?", fullmatch=True),
    st.from_regex(r"[0-9０-９٠-٩]{1,4}\.[0-9０-９]{2}\n?", fullmatch=True),  # other digits
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
)


@given(amount=AMOUNT_LIKE)
@settings(max_examples=300, deadline=None)
def test_compiled_amounts_decide_as_the_converter_does(amount: Any) -> None:
    """The generated code's fast path for the usual ``1234.50`` and its general path together
    accept and convert exactly what the documented converter does, in both directions."""
    from mappings.transform import _fen_to_yuan, _yuan_to_fen

    transform = REGISTRY.transforms["pension_information_form"]
    local = example("pension_information_form")
    local["record"]["contributions"][3]["base"] = amount
    try:
        expected = _yuan_to_fen(amount)
    except ValueError:
        with pytest.raises(TransformError) as info:
            transform.outbound(local)
        assert [p.path for p in info.value.problems] == ["record.contributions[3].base"]
        return
    partner = transform.outbound(local)
    assert partner["ac20"][3]["aae180"] == expected
    assert transform.inbound(partner)["record"]["contributions"][3]["base"] == _fen_to_yuan(
        expected
    )


def test_medical_many_to_one_is_told_apart_inbound() -> None:
    registration = example("medical_registration")
    resolution = REGISTRY.resolve(XZ, XY, "XZ-YB-002", registration, ON)
    assert resolution.partner_code == "XY-YB-001"
    partner = REGISTRY.to_partner(resolution, registration)
    assert partner["dcla_type"] == "2" and partner["insuplc_admdvs"] == "411329"
    assert partner["mdtrtarea_admvs"] == "420607" and partner["begndate"] == "2026-10-01"
    assert REGISTRY.resolve_inbound(XZ, XY, "XY-YB-001", partner, ON).local_code == "XZ-YB-002"
    partner["dcla_type"] = "1"
    assert REGISTRY.resolve_inbound(XZ, XY, "XY-YB-001", partner, ON).local_code == "XZ-YB-001"


def test_mapping_versions_follow_the_filing_date() -> None:
    form = example("generic_application")
    assert REGISTRY.resolve(XZ, XY, "XZ-SB-020", form, date(2026, 12, 31)).version == "2026.1"
    with pytest.raises(MappingError) as info:
        REGISTRY.resolve(XZ, XY, "XZ-SB-020", form, date(2027, 1, 2))
    assert info.value.code == "MATTER_RETIRED"
    assert "XZ-SB-020" in info.value.message and "420607" in info.value.message
    assert REGISTRY.resolve(XZ, XY, "XZ-SB-021", form, date(2027, 1, 2)).version == "2027.1"
    with pytest.raises(MappingError) as info:
        REGISTRY.resolve(XZ, XY, "XZ-SB-021", form, date(2025, 6, 1))
    assert info.value.code == "MAPPING_NOT_IN_FORCE"


def test_unknown_codes_name_the_code_and_jurisdiction() -> None:
    with pytest.raises(MappingError) as info:
        REGISTRY.resolve(XZ, XY, "XZ-NOPE-001", {}, ON)
    assert info.value.code == "MATTER_UNKNOWN"
    assert "XZ-NOPE-001" in info.value.message and "420607" in info.value.message
    with pytest.raises(MappingError) as info:
        REGISTRY.resolve_inbound(XZ, XY, "XZ-SB-001", {}, ON)  # our code where theirs belongs
    assert info.value.code == "MATTER_UNKNOWN" and "411329" in info.value.message


def test_bad_payload_lists_every_problem_at_once() -> None:
    transform = REGISTRY.transforms["pension_contact_letter"]
    form = example("pension_contact_letter")
    del form["applicant"]["name"]  # missing
    form["applicant"]["id_number"] = "411329198506150035"  # bad check digit
    form["transfer"]["letter_date"] = 20261120  # wrong type
    form["pension"]["scheme"] = "lifetime"  # unknown code value
    form["transfer"]["out_region"] = "419999"  # not a region
    with pytest.raises(TransformError) as info:
        transform.outbound(form)
    problems = {p.path: p.message for p in info.value.problems}
    assert problems["applicant.name"] == "is required"
    assert "check digit" in problems["applicant.id_number"]
    assert "yyyy-MM-dd" in problems["transfer.letter_date"]
    assert "unknown pension_scheme code 'lifetime'" in problems["pension.scheme"]
    assert "419999" in problems["transfer.out_region"]
    assert len(problems) == 5
    with pytest.raises(TransformError):
        transform.outbound(["not", "an", "object"])


def test_inbound_refuses_bad_partner_values() -> None:
    transform = REGISTRY.transforms["pension_information_form"]
    partner = transform.outbound(example("pension_information_form"))
    partner["ac20"][2]["aae180"] = -5
    partner["ac20"][4]["aae041"] = "202613"
    partner["aae140"] = "999"
    with pytest.raises(TransformError) as info:
        transform.inbound(partner)
    paths = {p.path for p in info.value.problems}
    assert paths == {"ac20[2].aae180", "ac20[4].aae041", "aae140"}


@pytest.mark.parametrize("name", sorted(REGISTRY.transforms))
def test_property_round_trip_is_identity_on_mapped_fields(name: str) -> None:
    transform = REGISTRY.transforms[name]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=local_payloads(transform.rules))
    def check(payload: dict[str, Any]) -> None:
        assert transform.inbound(transform.outbound(payload)) == _mapped_view(
            transform.rules, payload
        )

    check()


@given(st.sampled_from(sorted(REGISTRY.transforms)), st.data())
@settings(max_examples=40, deadline=None)
def test_property_partner_side_round_trip(name: str, data: st.DataObject) -> None:
    transform = REGISTRY.transforms[name]
    partner = transform.outbound(data.draw(local_payloads(transform.rules)))
    assert transform.outbound(transform.inbound(partner)) == partner


def test_every_cross_province_matter_has_transforms_both_ways() -> None:
    local = REGISTRY.catalogues[XZ]
    for (local_region, partner), versions in REGISTRY.mapping_sets.items():
        assert local_region == XZ
        version = versions[0]
        for matter in local.matters:
            if not matter.cross_province:
                continue
            entry = version.entries.get(matter.local_code)
            assert entry is not None, f"{matter.local_code} has no mapping to {partner}"
            for target in entry.targets:
                transform = REGISTRY.transforms[target.transform]
                assert callable(transform.outbound) and callable(transform.inbound)
                back = REGISTRY.resolve_inbound(
                    XZ,
                    partner,
                    target.partner_code,
                    {"dcla_type": target.inbound_when.equals} if target.inbound_when else {},
                    version.effective_from,
                )
                assert back.local_code == matter.local_code
    assert len([m for m in local.matters if m.cross_province]) == 126


def test_sample_catalogues_pass_structure_checks() -> None:
    for catalogue in REGISTRY.catalogues.values():
        assert len(catalogue.matters) == 126
        for matter in catalogue.matters:
            assert matter.implementation_code.startswith(matter.agency_code)
            assert matter.implementation_code.endswith(matter.basic_code)
    domains = {m.domain for m in REGISTRY.catalogues[XZ].matters}
    assert domains == {"公安", "教育", "医保", "社保", "住建"}
