"""How a delivery attempt failed, as the delivery worker needs to know it."""

from __future__ import annotations


class DeliveryError(Exception):
    """``transient``: try again later (same message id); otherwise the attempt is final."""

    def __init__(self, code: str, message: str, transient: bool) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.transient = code, message, transient


# Partner refusals of our envelope that a fresh seal (new nonce and time) can cure.
RESEALABLE = frozenset({"STALE", "REPLAYED"})
# Partner refusals that are about the partner's state, not about our message.
TRANSIENT_CODES = RESEALABLE | frozenset({"RATE_LIMITED", "UNAVAILABLE", "INTERNAL"})


def refusal(code: str, message: str) -> DeliveryError:
    return DeliveryError(code, message, transient=code in TRANSIENT_CODES)
