"""Load a mapping folder into a ``Registry``; ``lint`` reports every problem at once.

Folder layout (the packaged sample is ``mappings/data/``; an overlay folder may replace any
jurisdiction's catalogue, e.g. one imported with ``xgw mappings import``):

    jurisdictions.yaml                    regions taking part, ours and partners'
    codes.yaml                            value-code tables
    catalogue/<region>.csv                matters per jurisdiction (national export columns)
    bundles/<region>.yaml                 一件事 bundles filed in that jurisdiction
    transforms/<name>.yaml                schema transforms (both directions from one file)
    mapping-sets/<local>-<partner>/*.yaml versions of the matter-code mapping
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from mappings import identifiers
from mappings.catalogue import (
    Bundle,
    Catalogue,
    Matter,
    SubMatter,
    build_bundles,
    parse_catalogue_csv,
)
from mappings.codes import CodeTable, build_tables
from mappings.mapping import (
    MappingError,
    MappingVersion,
    Resolution,
    build_version,
    check_versions,
    inverse_index,
    pick_version,
    resolve,
    resolve_inbound,
)
from mappings.materials import Material, build_materials
from mappings.source import LocatedDict, LocatedList, Location, MappingDataError, Problem, load_yaml
from mappings.transform import Transform, TransformError, build_transform


def packaged_data_dir() -> Path:
    return Path(str(resources.files("mappings") / "data"))


@dataclass(frozen=True)
class Jurisdiction:
    region: str
    name: str
    role: str  # local | partner
    where: Location


@dataclass
class Registry:
    jurisdictions: dict[str, Jurisdiction]
    catalogues: dict[str, Catalogue]
    bundles: dict[str, Bundle]
    tables: dict[str, CodeTable]
    transforms: dict[str, Transform]
    mapping_sets: dict[tuple[str, str], list[MappingVersion]]
    # (region, local matter code) → what the resident brings (mappings/materials.py)
    materials: dict[tuple[str, str], tuple[Material, ...]] = field(default_factory=dict)
    _inverse: dict[tuple[str, str, str], Any] = field(default_factory=dict, repr=False)

    def materials_of(self, region: str, code: str) -> tuple[Material, ...]:
        """The materials a matter asks for (none declared: none)."""
        matter = self.matter(region, code)
        return self.materials.get((region, matter.local_code), ())

    def matter(self, region: str, code: str) -> Matter:
        catalogue = self.catalogues.get(region)
        if catalogue is None:
            raise MappingError("JURISDICTION_UNKNOWN", f"jurisdiction {region} has no catalogue")
        matter = catalogue.get(code)
        if matter is None:
            raise MappingError(
                "MATTER_UNKNOWN", f"matter {code} is not in the catalogue of {region}"
            )
        return matter

    def find_matter(self, code: str) -> list[Matter]:
        return [m for c in self.catalogues.values() if (m := c.get(code)) is not None]

    def versions(self, local: str, partner: str) -> list[MappingVersion]:
        versions = self.mapping_sets.get((local, partner))
        if not versions:
            raise MappingError(
                "JURISDICTION_UNMAPPED", f"no mapping set between {local} and {partner}"
            )
        return versions

    def resolve(
        self, local: str, partner: str, local_code: str, payload: Any, on: date
    ) -> Resolution:
        matter = self.matter(local, local_code)
        return resolve(
            pick_version(self.versions(local, partner), on, local, partner),
            matter.local_code,
            payload,
        )

    def resolve_inbound(
        self, local: str, partner: str, partner_code: str, payload: Any, on: date
    ) -> Resolution:
        matter = self.matter(partner, partner_code)
        version = pick_version(self.versions(local, partner), on, local, partner)
        key = (local, partner, version.version)
        index = self._inverse.get(key)
        if index is None:
            index = self._inverse[key] = inverse_index(version, [])
        return resolve_inbound(version, index, matter.local_code, payload)

    def to_partner(self, resolution: Resolution, payload: Any) -> dict[str, Any]:
        return self.transforms[resolution.transform].outbound(payload)

    def to_local(self, resolution: Resolution, payload: Any) -> dict[str, Any]:
        return self.transforms[resolution.transform].inbound(payload)

    def route(self, sub: SubMatter, payload: Any) -> str:
        """The jurisdiction that handles a sub-matter, by its rule and the payload."""
        if sub.route.jurisdiction is not None:
            return sub.route.jurisdiction
        value: Any = payload
        for part in sub.route.field_path or ():
            value = value.get(part) if isinstance(value, dict) else None
        path = ".".join(sub.route.field_path or ())
        if not isinstance(value, str) or value not in self.jurisdictions:
            raise MappingError(
                "ROUTE_UNRESOLVED",
                f"sub-matter {sub.id}: field {path} = {value!r} is not a jurisdiction we exchange with",
            )
        return value


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.is_file()) if folder.is_dir() else []


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _load(path: Path, root: Path, problems: list[Problem]) -> Any:
    try:
        return load_yaml(path, _display(path, root))
    except MappingDataError as exc:
        problems.extend(exc.problems)
        return None


def build_registry(
    root: Path, overlay: Path | None = None
) -> tuple[Registry | None, list[Problem]]:
    problems: list[Problem] = []
    if not root.is_dir():
        return None, [Problem(Location(str(root), 0), "not a folder")]
    here = Location(str(root), 0)

    jurisdictions: dict[str, Jurisdiction] = {}
    document = _load(root / "jurisdictions.yaml", root, problems)
    if isinstance(document, LocatedDict) and isinstance(document.get("jurisdictions"), LocatedList):
        for item in document["jurisdictions"]:
            if not isinstance(item, LocatedDict):
                continue
            region, role = str(item.get("region", "")), str(item.get("role", ""))
            try:
                identifiers.check_region(region)
            except identifiers.IdentifierError as exc:
                problems.append(Problem(item.at("region"), str(exc)))
                continue
            if role not in ("local", "partner"):
                problems.append(
                    Problem(item.at("role"), f"role must be local or partner, not {role!r}")
                )
            jurisdictions[region] = Jurisdiction(
                region, str(item.get("name", "")), role, item.location
            )
    elif document is not None:
        problems.append(Problem(here, "jurisdictions.yaml: expected 'jurisdictions:' list"))

    tables_doc = _load(root / "codes.yaml", root, problems)
    tables = build_tables(tables_doc, problems, here) if tables_doc is not None else {}

    catalogues: dict[str, Catalogue] = {}
    sources = {p.stem: p for p in sorted((root / "catalogue").glob("*.csv"))}
    if overlay is not None:
        sources.update({p.stem: p for p in sorted((overlay / "catalogue").glob("*.csv"))})
    for region, path in sources.items():
        display = _display(path, root)
        if region not in jurisdictions:
            problems.append(
                Problem(
                    Location(display, 0),
                    f"catalogue for {region}, which jurisdictions.yaml does not list",
                )
            )
            continue
        result = parse_catalogue_csv(path.read_text(encoding="utf-8"), display, region)
        problems.extend(result.rejected)
        catalogues[region] = Catalogue(region, result.matters)

    transforms: dict[str, Transform] = {}
    for path in _yaml_files(root / "transforms"):
        document = _load(path, root, problems)
        if document is not None:
            transform = build_transform(
                path.stem, document, tables, problems, Location(_display(path, root), 1)
            )
            if transform is not None:
                transforms[path.stem] = transform

    bundles: dict[str, Bundle] = {}
    for path in _yaml_files(root / "bundles"):
        document = _load(path, root, problems)
        if document is None:
            continue
        for bundle in build_bundles(
            document, path.stem, problems, Location(_display(path, root), 1)
        ):
            if bundle.code in bundles:
                problems.append(
                    Problem(bundle.where, f"bundle code {bundle.code} is defined twice")
                )
            bundles[bundle.code] = bundle
            catalogue = catalogues.get(bundle.region)
            for sub in bundle.sub_matters:
                if catalogue is None or catalogue.get(sub.matter) is None:
                    problems.append(
                        Problem(
                            sub.where,
                            f"matter {sub.matter} is not in the catalogue of {bundle.region}",
                        )
                    )
                if (
                    sub.route.jurisdiction is not None
                    and sub.route.jurisdiction not in jurisdictions
                ):
                    problems.append(
                        Problem(
                            sub.route_where,
                            f"route to unknown jurisdiction {sub.route.jurisdiction}",
                        )
                    )

    mapping_sets: dict[tuple[str, str], list[MappingVersion]] = {}
    sets_root = root / "mapping-sets"
    for folder in (
        sorted(p for p in sets_root.iterdir() if p.is_dir()) if sets_root.is_dir() else []
    ):
        local, _, partner = folder.name.partition("-")
        set_where = Location(_display(folder, root), 0)
        if local not in jurisdictions or partner not in jurisdictions:
            problems.append(
                Problem(
                    set_where,
                    f"mapping set {folder.name}: both sides must be listed in jurisdictions.yaml",
                )
            )
            continue
        versions: dict[str, MappingVersion] = {}
        documents = [(p, _load(p, root, problems)) for p in _yaml_files(folder)]
        # versions may extend earlier ones: build in order of effective_from
        documents.sort(
            key=lambda item: (
                str(item[1].get("effective_from", "")) if isinstance(item[1], dict) else ""
            )
        )
        for path, document in documents:
            if document is None:
                continue
            version = build_version(
                document, local, partner, versions, problems, Location(_display(path, root), 1)
            )
            if version is None:
                continue
            if version.version in versions:
                problems.append(
                    Problem(version.where, f"version {version.version} is defined twice")
                )
            versions[version.version] = version
            _check_version(version, catalogues, transforms, problems)
            inverse_index(version, problems)
        check_versions(list(versions.values()), problems)
        mapping_sets[(local, partner)] = sorted(versions.values(), key=lambda v: v.effective_from)

    materials: dict[tuple[str, str], tuple[Material, ...]] = {}
    for path in _yaml_files(root / "materials"):
        region = path.stem
        document = _load(path, root, problems)
        catalogue = catalogues.get(region)
        if catalogue is None:
            problems.append(
                Problem(
                    Location(_display(path, root), 0),
                    f"materials for {region}, which has no catalogue",
                )
            )
            continue
        if document is None:
            continue
        codes = {m.local_code for m in catalogue.matters}
        for code, listed in build_materials(
            document, codes, problems, Location(_display(path, root), 1)
        ).items():
            materials[(region, code)] = listed

    if problems:
        return None, problems
    return (
        Registry(jurisdictions, catalogues, bundles, tables, transforms, mapping_sets, materials),
        [],
    )


def _check_version(
    version: MappingVersion,
    catalogues: dict[str, Catalogue],
    transforms: dict[str, Transform],
    problems: list[Problem],
) -> None:
    local_catalogue = catalogues.get(version.local_region)
    partner_catalogue = catalogues.get(version.partner_region)
    for entry in version.entries.values():
        if local_catalogue is None or local_catalogue.get(entry.local_code) is None:
            problems.append(
                Problem(
                    entry.where,
                    f"local code {entry.local_code} is not in the catalogue of {version.local_region}",
                )
            )
        seen_conditions: set[str] = set()
        for target in entry.targets:
            if partner_catalogue is None or partner_catalogue.get(target.partner_code) is None:
                problems.append(
                    Problem(
                        target.where,
                        f"partner code {target.partner_code} is not in the catalogue of {version.partner_region}",
                    )
                )
            if target.transform not in transforms:
                problems.append(Problem(target.where, f"unknown transform {target.transform!r}"))
            if target.when is not None:
                described = target.when.describe()
                if described in seen_conditions:
                    problems.append(
                        Problem(
                            target.where, f"{entry.local_code}: condition {described} appears twice"
                        )
                    )
                seen_conditions.add(described)


def load_registry(root: Path | None = None, overlay: Path | None = None) -> Registry:
    registry, problems = build_registry(root or packaged_data_dir(), overlay)
    if registry is None:
        raise MappingDataError(problems)
    return registry


def lint(root: Path | None = None, overlay: Path | None = None) -> list[Problem]:
    return build_registry(root or packaged_data_dir(), overlay)[1]


__all__ = [
    "Jurisdiction",
    "MappingDataError",
    "MappingError",
    "Registry",
    "TransformError",
    "build_registry",
    "lint",
    "load_registry",
    "packaged_data_dir",
]
