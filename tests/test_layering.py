"""The layout is the architecture: imports point gateway → adapters → {security, mappings} →
rules (what every code and text field must be: a leaf that all of them share)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "rules": set(),
    "security": {"rules"},
    "mappings": {"rules"},
    "adapters": {"security", "mappings", "rules"},
    "gateway": {"adapters", "security", "mappings", "rules"},
}


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = _imported_packages(path) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


# Inside gateway/: the rooms and what each may import of gateway (top-level modules by name,
# rooms by folder). The core is pure: no I/O library either. Nothing but the CLI imports the
# development tools (the simulator, the demo, the sample setup).
BESIDE = {
    "gateway.config",
    "gateway.logs",
    "gateway.partners",
    "gateway.keystore",
    "gateway.metrics",
}
ROOMS: dict[str, set[str]] = {
    "gateway.core": set(),
    "gateway.storage": {"gateway.core"},
    "gateway.audit": {"gateway.storage", "gateway.logs"},
    "gateway.services": {"gateway.core", "gateway.storage", "gateway.audit"} | BESIDE,
    "gateway.assembly": {"gateway.core", "gateway.storage", "gateway.audit", "gateway.services"}
    | BESIDE,
    "gateway.http": {
        "gateway.core",
        "gateway.storage",
        "gateway.audit",
        "gateway.services",
        "gateway.assembly",
    }
    | BESIDE,
    "gateway.devtools": {"gateway.core", "gateway.storage", "gateway.http"} | BESIDE,
    "gateway.cli": {
        "gateway.core",
        "gateway.storage",
        "gateway.audit",
        "gateway.services",
        "gateway.http",
        "gateway.assembly",
        "gateway.devtools",
    }
    | BESIDE,
    "gateway.config": set(),
    "gateway.logs": set(),
    "gateway.partners": {"gateway.config"},
    "gateway.keystore": {"gateway.config"},
    "gateway.metrics": set(),
}
PURE_ROOMS = {"gateway.core"}
IO_LIBRARIES = {"aiohttp", "asyncio", "sqlite3", "redis", "socket", "subprocess", "zeep", "lxml"}


def _room(module: str) -> str | None:
    """The room a gateway module belongs to (the longest matching name), or None."""
    matches = [room for room in ROOMS if module == room or module.startswith(room + ".")]
    return max(matches, key=len) if matches else None


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (relative imports resolved), with its line."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = (
        module.rsplit(".", 1)[0] if path.name != "__init__.py" else module[: -len(".__init__")]
    )
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_rooms_inside_gateway_import_one_way() -> None:
    wrong = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        room = _room(module)
        if room is None:
            continue  # gateway/__init__.py: the package's face
        for name, line in _imports(path):
            target = _room(name)
            if name.split(".")[0] in IO_LIBRARIES and room in PURE_ROOMS:
                wrong.append(f"{path.relative_to(ROOT)}:{line} (pure) imports {name}")
            if target is None or target == room:
                continue
            if target not in ROOMS[room]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({room}) imports {name}")
    assert not wrong, "\n".join(wrong)


def test_only_the_cli_imports_the_development_tools() -> None:
    for package in ("gateway", "adapters", "mappings", "security", "rules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "gateway" / "devtools") or path.is_relative_to(
                ROOT / "gateway" / "cli"
            ):
                continue
            users = [n for n, _ in _imports(path) if n.startswith("gateway.devtools")]
            assert not users, f"{path.relative_to(ROOT)} imports {users}"


def test_adapters_import_mappings_only_with_a_reason_written() -> None:
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if any(n.split(".")[0] == "mappings" for n, _ in _imports(path)):
            assert "mappings-import-reason:" in text, f"{path.relative_to(ROOT)}: why mappings?"


# Who may speak SQL: the storage room, and the simulator's ledger (a fake partner's own
# records, not the gateway's).
DATABASE_DRIVERS = {"sqlite3", "asyncpg", "psycopg"}
DRIVER_USERS = {"gateway/storage", "gateway/devtools/simulator.py"}


def test_only_the_store_imports_a_database_driver() -> None:
    wrong = []
    for package in ("gateway", "adapters", "mappings", "security", "rules"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if any(relative == user or relative.startswith(user + "/") for user in DRIVER_USERS):
                continue
            wrong += [
                f"{relative}:{line} imports {name}"
                for name, line in _imports(path)
                if name.split(".")[0] in DATABASE_DRIVERS
            ]
    assert not wrong, "\n".join(wrong)
