"""The data folder holds personal data (forms, answers) and keys: only its owner may read it.

Every ``xgw`` process sets the umask to 077 first, so each file and folder it creates (the
SQLite files and their ``-wal``/``-shm``, archives, keys) is 0600/0700 whatever the caller's
umask. A data folder the gateway creates is 0700; one that exists with looser modes — or files
in it readable by others, left by an older version or a copy — is reported at start-up (a
warning per path, at most ``REPORTED``), not changed: an operator may share it on purpose.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.config import Settings

PRIVATE_UMASK = 0o077
REPORTED = 20


def restrict_new_files() -> None:
    os.umask(PRIVATE_UMASK)


def ensure_private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)


def loose_paths(folder: Path, limit: int = REPORTED) -> list[tuple[Path, str]]:
    """(path, mode) of the folder and what is in it that group or others may read, write or
    enter, up to ``limit``."""
    found: list[tuple[Path, str]] = []
    if not folder.exists():
        return found
    for path in [folder, *sorted(folder.rglob("*"))]:
        try:
            mode = path.lstat().st_mode
        except OSError:
            continue
        if stat.S_ISLNK(mode):
            continue
        if mode & 0o077:
            found.append((path, stat.filemode(mode)))
            if len(found) >= limit:
                break
    return found


def embedded_setup(settings: Settings) -> None:
    """The embedded default's SAMPLE setup (keys, partner registry, simulated partners' keys),
    made on first start where nothing is configured; nothing where ``keys_dir`` and
    ``partners_file`` are. A development tool: imported only here, when a command needs it."""
    from gateway.devtools.sample_setup import ensure_sample_setup

    ensure_sample_setup(settings)
