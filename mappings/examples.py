"""The SAMPLE forms shipped with the mapping data (``data/examples/``): one place for the demo,
the explanation of a matter, the tests and the benchmarks to take a form from."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from mappings.identifiers import make_uscc
from mappings.materials import make_licence_identifier
from mappings.registry import Registry, load_registry, packaged_data_dir

# Which SAMPLE forms make up a bundle's case form (merged section by section).
BUNDLE_FORMS = {
    "YJS-SBZR": ["pension_contact_letter", "generic_application", "housing_fund_transfer"],
    "YJS-YLBX": ["medical_registration", "medical_reimbursement"],
    "YJS-HKQY": ["household_migration", "generic_application"],
    "YJS-XJZJ": ["school_transfer"],
    "YJS-GJJZY": ["housing_fund_transfer", "generic_application"],
}


def example(name: str, root: Path | None = None) -> dict[str, Any]:
    """The SAMPLE form of a transform, in our schema."""
    path = (root or packaged_data_dir()) / "examples" / f"{name}.yaml"
    return dict(yaml.safe_load(path.read_text(encoding="utf-8"))["payload"])


def bundle_form(code: str, root: Path | None = None) -> dict[str, Any]:
    """One case form for a bundle: the SAMPLE forms of its transforms, merged section by section."""
    form: dict[str, Any] = {}
    for name in BUNDLE_FORMS[code]:
        for section, values in example(name, root).items():
            form.setdefault(section, {}).update(values)
    return form


def applicant_of(form: dict[str, Any]) -> dict[str, Any]:
    """The person a form is about (id number and name), as a filing names its applicant."""
    for section in ("applicant", "insured", "person", "depositor", "guardian"):
        person = form.get(section)
        if isinstance(person, dict) and "id_number" in person and "name" in person:
            return {"id_number": person["id_number"], "name": person["name"]}
    raise ValueError("the form names no person")


# The SAMPLE issuer of the SAMPLE 电子证照 (a made-up USCC of 襄州区).
SAMPLE_LICENCE_ISSUER = make_uscc("11", "420607", "17410101")


def sample_licence(licence_type: str, holder: str) -> str:
    """The SAMPLE 电子证照 of this type a SAMPLE resident holds (the simulator's licence
    registry knows exactly these)."""
    serial = f"S{holder[-8:].replace('X', '0')}"
    return make_licence_identifier(licence_type, SAMPLE_LICENCE_ISSUER, serial, 1)


def sample_licences(
    registry: Registry, region: str, matters: list[str], holder: str
) -> list[dict[str, str]]:
    """E-licence references for every required material that one may stand in for."""
    given: dict[str, dict[str, str]] = {}
    for matter in matters:
        for material in registry.materials_of(region, matter):
            if material.required and material.licence_type and material.code not in given:
                given[material.code] = {
                    "material": material.code,
                    "identifier": sample_licence(material.licence_type, holder),
                    "holder": holder,
                }
    return list(given.values())


@functools.cache
def _packaged_registry() -> Registry:
    return load_registry(packaged_data_dir())


def sample_filing(
    code: str, registry: Registry | None = None, region: str = "420607"
) -> dict[str, Any]:
    """A SAMPLE filing of a bundle through the windows API: form, applicant, and the 电子证照
    standing in for its required materials (``registry``: the packaged data's by default)."""
    registry = registry or _packaged_registry()
    form = bundle_form(code)
    applicant = applicant_of(form)
    matters = [sub.matter for sub in registry.bundles[code].sub_matters]
    return {
        "bundle": code,
        "applicant": applicant,
        "form": form,
        "licences": sample_licences(registry, region, matters, applicant["id_number"]),
    }
