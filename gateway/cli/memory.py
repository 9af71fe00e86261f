"""Large request bodies give their memory back.

glibc serves a large allocation (a request body, its parsed form, a sealed value) with its own
mmap and unmaps it when freed — until the first such free, after which it raises its threshold
(up to 32 MiB) and serves later ones from the heap, which it seldom gives back: a 10 MiB filing
then left ~40 MiB resident for good. A fixed threshold keeps the first behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE = 256 * 1024


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold at ``LARGE`` bytes; False where that is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE))
    except (OSError, AttributeError):
        return False
