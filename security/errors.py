"""Typed security failures with stable codes. Messages never carry key material or payload."""

from __future__ import annotations

from typing import Final

SIGNATURE_INVALID: Final = "SIGNATURE_INVALID"
KEY_UNKNOWN: Final = "KEY_UNKNOWN"
KEY_REVOKED: Final = "KEY_REVOKED"
KEY_EXPIRED: Final = "KEY_EXPIRED"
KEY_NOT_YET_VALID: Final = "KEY_NOT_YET_VALID"
KEY_WRONG_JURISDICTION: Final = "KEY_WRONG_JURISDICTION"
REPLAYED: Final = "REPLAYED"
STALE: Final = "STALE"
DECRYPT_FAILED: Final = "DECRYPT_FAILED"
ENVELOPE_MALFORMED: Final = "ENVELOPE_MALFORMED"
NOT_FOR_US: Final = "NOT_FOR_US"
KEY_FILE_INVALID: Final = "KEY_FILE_INVALID"
PASSPHRASE_INVALID: Final = "PASSPHRASE_INVALID"  # noqa: S105 - an error code
PASSPHRASE_REQUIRED: Final = "PASSPHRASE_REQUIRED"  # noqa: S105 - an error code
BACKEND_UNAVAILABLE: Final = "BACKEND_UNAVAILABLE"
TRUST_CONFIG_INVALID: Final = "TRUST_CONFIG_INVALID"


class SecurityError(Exception):
    """A refusal with a stable ``code`` and a message safe to show a partner or log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def decrypt_failed() -> SecurityError:
    # One error whatever went wrong (bad wrap, bad tag, bad digest): no decryption oracle.
    return SecurityError(DECRYPT_FAILED, "the envelope could not be decrypted")
