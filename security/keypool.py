"""Content keys wrapped ahead of need: the message-independent half of sealing, made at idle.

Sealing an envelope is an SM2 signature over the message plus an SM2 encryption of a fresh SM4
content key to the recipient. The second does not depend on the message and costs as much as
the signature; a background thread makes a few per recipient key while nothing else wants the
CPU (Linux ``SCHED_IDLE``), so a seal on a case's path — a window waiting for its answer — only
signs. Under full load the pool is empty and seals wrap their own key, as without it: the work
is the same, only moved off the path where there is time to spare.

Each wrapped key is handed out once and used for one envelope; it lives only in this process's
memory, as the content key of any envelope being sealed does. Keys for a recipient key nobody
has sealed to for ``max_age_seconds`` are dropped (a rotated-out key is not kept warm), and a
pooled key older than that is never used.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from security.backend import CryptoBackend
from security.envelope import WrappedKey, wrap_content_key
from security.keys import PublicKey


def _yield_to_everything_else() -> None:
    """The calling thread runs only when the CPU is otherwise idle (Linux), else at the lowest
    priority the platform gives an unprivileged thread."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ContentKeyPool:
    def __init__(
        self,
        backend: CryptoBackend,
        depth: int = 8,
        max_age_seconds: float = 300.0,
        on_first_full: Callable[[PublicKey], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend, self.depth, self.max_age = backend, depth, max_age_seconds
        self._clock = clock
        # told (from the pool's thread) when a recipient's keys first reach ``depth``: a
        # caller's log line, and what a test waits on instead of sleeping
        self._on_first_full = on_first_full
        self._filled: set[str] = set()
        self._cond = threading.Condition()
        # recipient key id -> (made at, wrapped key), oldest first
        self._ready: dict[str, deque[tuple[float, WrappedKey]]] = {}
        self._wanted: dict[str, tuple[PublicKey, float]] = {}  # key id -> (key, last asked)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.taken_ready = 0  # seals that found a key made ahead
        self.taken_cold = 0  # seals that had to wrap their own

    def start(self) -> None:
        """Start wrapping (no thread with depth 0, or for a backend computing SM2 under the
        GIL: its wraps would stall the event loop instead of using idle time)."""
        if self._thread is None and self.depth > 0 and self.backend.parallel_sm2:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name="xgw-key-pool", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._cond:
            self._ready.clear()

    def take(self, recipient: PublicKey) -> WrappedKey | None:
        """A key wrapped for ``recipient`` ahead of time, or None (the caller wraps one; the
        pool starts keeping some for this recipient)."""
        now = self._clock()
        with self._cond:
            self._wanted[recipient.key_id] = (recipient, now)
            self._cond.notify()  # one key fewer, or a new recipient: work for the thread
            ready = self._ready.get(recipient.key_id)
            while ready:
                made, wrapped = ready.popleft()
                if now - made <= self.max_age:
                    self.taken_ready += 1
                    return wrapped
            self.taken_cold += 1
        return None

    def ready_count(self, recipient: PublicKey) -> int:
        with self._cond:
            return len(self._ready.get(recipient.key_id, ()))

    def _next_recipient(self) -> PublicKey | None:
        """Under the lock: the wanted recipient with the fewest keys ready, below ``depth``."""
        now = self._clock()
        for key_id, (_, asked) in list(self._wanted.items()):
            if now - asked > self.max_age:
                del self._wanted[key_id]
                self._ready.pop(key_id, None)
        lowest: tuple[int, PublicKey] | None = None
        for key_id, (key, _) in self._wanted.items():
            count = len(self._ready.get(key_id, ()))
            if count < self.depth and (lowest is None or count < lowest[0]):
                lowest = (count, key)
        return lowest[1] if lowest is not None else None

    def _run(self) -> None:
        _yield_to_everything_else()
        while True:
            with self._cond:
                recipient = self._next_recipient()
                while recipient is None and not self._closing:
                    self._cond.wait(timeout=self.max_age)
                    recipient = self._next_recipient()
                if self._closing or recipient is None:
                    return
            try:
                wrapped = wrap_content_key(recipient, self.backend)
            except Exception:  # a key the backend refuses: seals will report it themselves
                with self._cond:
                    self._wanted.pop(recipient.key_id, None)
                continue
            with self._cond:
                if recipient.key_id not in self._wanted:
                    continue
                queue = self._ready.setdefault(recipient.key_id, deque())
                queue.append((self._clock(), wrapped))
                first_full = len(queue) >= self.depth and recipient.key_id not in self._filled
                if first_full:
                    self._filled.add(recipient.key_id)
            if first_full and self._on_first_full is not None:
                self._on_first_full(recipient)
