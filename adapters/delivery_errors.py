"""How a delivery attempt failed, as the delivery worker needs to know it."""

from __future__ import annotations


class DeliveryError(Exception):
    """``transient``: try again later (same message id); otherwise the attempt is final.
    ``reached``: the request may have reached the peer, which may have acted on it (a
    timeout, a connection dropped mid-exchange, an answer we could not use); False only when
    it cannot have: no connection was made, or the peer answered that it did not act."""

    def __init__(self, code: str, message: str, transient: bool, reached: bool = True) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.transient = code, message, transient
        self.reached = reached


# Partner refusals of our envelope that a fresh seal (new nonce and time) can cure.
RESEALABLE = frozenset({"STALE", "REPLAYED"})
# Partner refusals that are about the partner's state, not about our message.
# A material cut short or changed on the way (XGW-ENV/2) is sent again, byte for byte, from
# the outbox: what is stored there opened at the partner's before, or we would not have sent it.
TRANSIENT_CODES = RESEALABLE | frozenset(
    {
        "RATE_LIMITED",
        "UNAVAILABLE",
        "INTERNAL",
        "MATERIAL_TRUNCATED",
        "MATERIAL_BROKEN",
        "MATERIAL_TOO_LONG",
    }
)


def refusal(code: str, message: str) -> DeliveryError:
    """The partner answered, refusing the message: it did not act on it."""
    return DeliveryError(code, message, transient=code in TRANSIENT_CODES, reached=False)


def unavailable(status: int) -> DeliveryError:
    """An HTTP error status instead of an answer. 503 and 429 say the request was not taken
    in; any other may come from a service that failed half-way."""
    return DeliveryError(
        "PARTNER_UNAVAILABLE", f"HTTP {status}", transient=True, reached=status not in (429, 503)
    )
