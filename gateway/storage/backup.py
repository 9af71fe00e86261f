"""Backups of the embedded gateway's data folder, consistent while it serves.

The SQLite files (the store, the exchange log) are copied with SQLite's online backup — a
consistent snapshot taken while the gateway keeps writing — and every other file of the data
folder (keys, the partner registry, imported catalogues, archives) as it is; a manifest lists
each with its size and SM3. A restore checks the manifest before writing anything, and only
into a data folder that holds no store yet. With PostgreSQL the database is backed up with
its own tools (``pg_dump``; docs/operations.md); this still saves the node's files.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.storage.records import StoreError
from security.digest import sm3_hex

MANIFEST = "xgw-backup.json"
FORMAT = "xgw-backup/1"
SQLITE_SUFFIXES = (".sqlite3",)
# not copied: SQLite's side files, half-written files, and a node's memory of what it signed
# (gateway.audit.memory: a restore starts a new one)
SKIPPED = ("-wal", "-shm", ".part", ".lock", ".signed-head")


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(SKIPPED) and p.name != MANIFEST
    )


def back_up(
    data_dir: Path, target: Path, progress: Callable[[str], None] = print
) -> dict[str, object]:
    """Copy ``data_dir`` into the new folder ``target``; returns the manifest."""
    if target.exists() and any(target.iterdir()):
        raise StoreError(f"{target} is not empty: a backup goes into a new folder")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    entries = []
    for source in _files(data_dir):
        relative = source.relative_to(data_dir)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if source.suffix in SQLITE_SUFFIXES:
            _sqlite_copy(source, destination)
        else:
            shutil.copy2(source, destination)
        data = destination.read_bytes()
        entries.append({"file": relative.as_posix(), "size": len(data), "sm3": sm3_hex(data)})
        progress(f"  {relative}  {len(data):,} bytes")
    manifest: dict[str, object] = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": entries,
    }
    (target / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def _sqlite_copy(source: Path, destination: Path) -> None:
    """SQLite's online backup: a consistent copy while writers go on, fsynced."""
    try:
        with sqlite3.connect(source, timeout=30) as src, sqlite3.connect(destination) as dst:
            src.backup(dst, pages=4096)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise StoreError(f"{source.name}: {exc}") from None
    with open(destination, "rb") as handle:
        os.fsync(handle.fileno())


def restore(source: Path, data_dir: Path, progress: Callable[[str], None] = print) -> int:
    """Copy a backup into ``data_dir``, which must not hold a store; every file is checked
    against the manifest first. Returns how many files were restored."""
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise StoreError(f"{source} holds no {MANIFEST}: not an xgw backup")
    manifest = orjson.loads(manifest_path.read_bytes())
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{manifest_path}: format {manifest.get('format')!r}, not {FORMAT}")
    files = manifest["files"]
    for entry in files:  # all checked before anything is written
        path = (source / entry["file"]).resolve()
        if not path.is_relative_to(source.resolve()):
            raise StoreError(f"{entry['file']}: outside the backup")
        if not path.is_file() or sm3_hex(path.read_bytes()) != entry["sm3"]:
            raise StoreError(f"{entry['file']}: missing or changed since the backup was made")
    if (data_dir / "gateway.sqlite3").exists() or (data_dir / "audit.sqlite3").exists():
        raise StoreError(f"{data_dir} already holds a store: restore into an empty data folder")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for entry in files:
        destination = data_dir / entry["file"]
        destination.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copy2(source / entry["file"], destination)
        progress(f"  {entry['file']}")
    return len(files)
