"""``xgw mappings lint | explain | import``: operators editing mapping data see what is wrong."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

from gateway.cli.progress import Progress
from gateway.config import Settings
from mappings.catalogue import Matter, iter_catalogue_csv, render_catalogue_csv
from mappings.examples import example
from mappings.mapping import inverse_index
from mappings.registry import Registry, build_registry
from mappings.source import Problem
from mappings.transform import Rule, TransformError
from security.digest import sm3_hex


def _assembly() -> ModuleType:
    """The wiring (heavy: every adapter), imported when a command needs it, not at start."""
    import gateway.assembly

    return gateway.assembly


def print_problems(problems: list[Problem]) -> None:
    for problem in problems:
        print(problem)
    print(f"{len(problems)} problem(s)", file=sys.stderr)


def cmd_lint(args: argparse.Namespace, settings: Settings) -> int:
    root = args.dir or _assembly().mappings_dir(settings)
    overlay = None if args.dir else settings.mappings_overlay_dir
    registry, problems = build_registry(root, overlay)
    if problems or registry is None:
        print_problems(problems)
        return 1
    matters = sum(len(c.matters) for c in registry.catalogues.values())
    versions = sum(len(v) for v in registry.mapping_sets.values())
    print(
        f"ok: {len(registry.jurisdictions)} jurisdictions, {matters} matters, "
        f"{len(registry.bundles)} bundles, {len(registry.transforms)} transforms, "
        f"{len(registry.mapping_sets)} mapping sets ({versions} versions), "
        f"materials for {len(registry.materials)} matters"
    )
    return 0


def _describe_rule(rule: Rule, indent: str = "    ") -> list[str]:
    if rule.const is not None:
        return [f"{indent}{'.'.join(rule.partner)} = {rule.const!r} (constant, outbound only)"]
    if rule.derive is not None:
        source = ".".join(rule.derive_from or ())
        return [f"{indent}{'.'.join(rule.partner)} = {rule.derive} of {source} (derived, outbound)"]
    detail = rule.type + (f" table {rule.table}" if rule.table else "")
    detail += f" {rule.partner_format}" if rule.partner_format else ""
    detail += f" in {rule.partner_unit}" if rule.type == "amount" else ""
    flag = " required" if rule.required else ""
    lines = [f"{indent}{'.'.join(rule.local or ())} ⇄ {'.'.join(rule.partner)}  ({detail}{flag})"]
    for item in rule.items:
        lines += _describe_rule(item, indent + "    ")
    return lines


def _example(settings: Settings, transform: str) -> Any:
    try:
        return example(transform, _assembly().mappings_dir(settings))
    except (OSError, KeyError, TypeError):  # none for this transform, or not a SAMPLE form
        return None


def _explain_local(registry: Registry, settings: Settings, matter: Matter, on: date) -> None:
    shown: set[str] = set()
    for (local, partner), versions in sorted(registry.mapping_sets.items()):
        if local != matter.region:
            continue
        version = next((v for v in versions if v.in_force(on)), None)
        if version is None:
            continue
        entry = version.entries.get(matter.local_code)
        name = registry.jurisdictions[partner].name
        if entry is None:
            state = "retired" if matter.local_code in version.retired else "not mapped"
            print(f"\n→ {partner} {name}: {state} (mapping {version.version})")
            continue
        print(f"\n→ {partner} {name} (mapping {version.version}, {version.where})")
        for target in entry.targets:
            partner_matter = registry.catalogues[partner].get(target.partner_code)
            when = f" when {target.when.describe()}" if target.when else ""
            inbound = (
                f"; inbound when {target.inbound_when.describe()}" if target.inbound_when else ""
            )
            label = partner_matter.name if partner_matter else "?"
            print(f"  {target.partner_code} {label}{when}{inbound}, transform {target.transform}")
        for name in dict.fromkeys(t.transform for t in entry.targets):
            if name in shown:
                continue
            shown.add(name)
            transform = registry.transforms[name]
            print(f"  transform {name} ({transform.where}): {transform.description}")
            for rule in transform.rules:
                for line in _describe_rule(rule):
                    print(line)
            example = _example(settings, name)
            if example is None:
                continue
            print("  example (SAMPLE payload, local → partner):")
            try:
                converted = transform.outbound(example)
                print(
                    "    "
                    + json.dumps(converted, ensure_ascii=False, indent=2).replace("\n", "\n    ")
                )
            except TransformError as exc:
                print(f"    the sample does not transform: {exc}")


def _explain_partner(registry: Registry, matter: Matter, on: date) -> None:
    for (local, partner), versions in sorted(registry.mapping_sets.items()):
        if partner != matter.region:
            continue
        version = next((v for v in versions if v.in_force(on)), None)
        if version is None:
            continue
        sources = inverse_index(version, []).get(matter.local_code, [])
        print(f"\n← inbound to {local} (mapping {version.version}):")
        if not sources:
            print("  not mapped")
        for entry, target in sources:
            local_matter = registry.catalogues[local].get(entry.local_code)
            when = f" when {target.inbound_when.describe()}" if target.inbound_when else ""
            label = local_matter.name if local_matter else "?"
            print(f"  {entry.local_code} {label}{when}, transform {target.transform}")


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    registry = _assembly().registry_for(settings)
    matters = registry.find_matter(args.code)
    if not matters:
        print(f"matter {args.code} is in no catalogue", file=sys.stderr)
        return 1
    on = date.fromisoformat(args.on) if args.on else date.today()
    for matter in matters:
        jurisdiction = registry.jurisdictions[matter.region]
        print(f"{matter.local_code} {matter.name}")
        print(f"  jurisdiction {matter.region} {jurisdiction.name} ({jurisdiction.role})")
        print(f"  实施编码 {matter.implementation_code}  基本编码 {matter.basic_code}")
        print(
            f"  {matter.domain} · {matter.matter_type} · 行使层级 {matter.level} · {matter.department}"
        )
        print(f"  跨省通办 {'是' if matter.cross_province else '否'}   ({matter.where})")
        for bundle in registry.bundles.values():
            for sub in bundle.sub_matters:
                if sub.matter == matter.local_code and bundle.region == matter.region:
                    print(
                        f"  in bundle {bundle.code} {bundle.name} as {sub.id}, routed to "
                        f"{sub.route.describe()}"
                    )
        for material in registry.materials_of(matter.region, matter.local_code):
            stand_in = (
                f", or its 电子证照 (证照类型 {material.licence_type})"
                if material.licence_type
                else ""
            )
            print(
                f"  material {material.code} {material.name}: "
                f"{'required' if material.required else 'optional'}, "
                f"{'/'.join(material.types)} up to {material.max_bytes // (1024 * 1024)} MiB"
                f"{stand_in}"
            )
        if jurisdiction.role == "local":
            _explain_local(registry, settings, matter, on)
        else:
            _explain_partner(registry, matter, on)
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    total = max(text.count("\n") - 1, 1)
    progress = Progress(f"importing {path.name}", total)
    matters: list[Matter] = []
    rejected: list[Problem] = []
    for _line, matter, problem in iter_catalogue_csv(text, str(path), args.region):
        progress.advance()
        if matter is not None:
            matters.append(matter)
        if problem is not None:
            rejected.append(problem)
    progress.finish()
    if rejected:
        print(f"rejected {len(rejected)} of {progress.done} rows; nothing was imported:")
        print_problems(rejected)
        return 1
    if not matters:
        print("no rows to import; nothing was imported", file=sys.stderr)
        return 1
    overlay = settings.mappings_overlay_dir / "catalogue"
    overlay.mkdir(parents=True, exist_ok=True)
    # Check the whole mapping data with the new catalogue before it replaces the old one.
    with tempfile.TemporaryDirectory(dir=settings.mappings_overlay_dir) as staging:
        staged = Path(staging) / "catalogue"
        staged.mkdir()
        for existing in overlay.glob("*.csv"):
            (staged / existing.name).write_bytes(existing.read_bytes())
        (staged / f"{args.region}.csv").write_text(render_catalogue_csv(matters), encoding="utf-8")
        _registry, problems = build_registry(_assembly().mappings_dir(settings), Path(staging))
        if problems:
            print("the mapping data would break with this catalogue; nothing was imported:")
            print_problems(problems)
            return 1
        target = overlay / f"{args.region}.csv"
        os.replace(staged / f"{args.region}.csv", target)
    from gateway.audit.log import AuditEvent

    _assembly().open_audit_log(settings).append(
        AuditEvent(
            "mappings.catalogue_imported",
            actor="cli",
            details={
                "region": args.region,
                "matters": len(matters),
                "sm3": sm3_hex(target.read_bytes()),
            },
        )
    )
    print(f"imported {len(matters)} matters for {args.region} into {target}")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mappings = commands.add_parser("mappings", help="lint, explain and import mapping data")
    actions = mappings.add_subparsers(dest="mappings_command", metavar="ACTION", required=True)
    lint = actions.add_parser("lint", help="check mapping data; every problem with file:line")
    lint.add_argument("dir", nargs="?", type=Path, help="mapping folder (default: configured)")
    lint.set_defaults(handler=cmd_lint)
    explain = actions.add_parser("explain", help="what a matter code maps to, and how")
    explain.add_argument("code", help="local code or 实施编码, ours or a partner's")
    explain.add_argument("--on", help="date the mapping must be in force (default today)")
    explain.set_defaults(handler=cmd_explain)
    imp = actions.add_parser("import", help="import a catalogue CSV (national export columns)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--region", required=True, help="GB/T 2260 code of the jurisdiction")
    imp.set_defaults(handler=cmd_import)
