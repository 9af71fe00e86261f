"""Progress for long CLI work: a redrawn bar on a terminal, a line every 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label, self.total = label, max(total, 1)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self._last_decile = -1
        self._last_draw = 0.0
        self._start = time.monotonic()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                filled = int(30 * self.done / self.total)
                self.stream.write(
                    f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
                )
                self.stream.flush()
            return
        decile = 10 * self.done // self.total
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({10 * decile}%)\n")

    def finish(self) -> None:
        elapsed = time.monotonic() - self._start
        if self.tty:
            self.stream.write("\n")
        self.stream.write(f"{self.label}: {self.done} in {elapsed:.1f}s\n")
