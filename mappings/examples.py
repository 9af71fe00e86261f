"""The SAMPLE forms shipped with the mapping data (``data/examples/``): one place for the demo,
the explanation of a matter, the tests and the benchmarks to take a form from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mappings.registry import packaged_data_dir

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
