"""Console sessions: a token exchanged once for a signed cookie that expires when idle.

The cookie carries who signed in (the token's name, role and hall, and its hash — so that a
revoked token ends the session at its next request), a CSRF secret, and when it expires; it is
signed with HMAC-SHA256 under a key the nodes share (``<keys_dir>/console-session.key``), so any
node serves any session and nothing is kept per session. Pure functions; the handlers set it
HttpOnly, SameSite=Strict (and Secure over TLS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import orjson

COOKIE = "xgw_console"


@dataclass(frozen=True)
class Session:
    name: str
    role: str
    hall: str | None
    token_hash: str
    csrf: str
    expires: float  # seconds since the epoch; renewed at every request (idle timeout)


def new_session(
    name: str, role: str, hall: str | None, token_hash: str, now: float, idle: float
) -> Session:
    return Session(name, role, hall, token_hash, secrets.token_urlsafe(24), now + idle)


def renewed(session: Session, now: float, idle: float) -> Session:
    return replace(session, expires=now + idle)


# A session is renewed (a new cookie sent) at most this often: the case page's refresh every
# 2 s would otherwise sign and send a cookie with every 304.
RENEW_AFTER_SECONDS = 60.0


def renewal_due(session: Session, now: float, idle: float) -> bool:
    return session.expires - now < idle - RENEW_AFTER_SECONDS


def seal(session: Session, key: bytes) -> str:
    body = base64.urlsafe_b64encode(orjson.dumps(asdict(session))).decode().rstrip("=")
    return f"{body}.{_mac(body, key)}"


def opened(value: str | None, key: bytes, now: float) -> Session | None:
    """The session a cookie holds, if it is ours, unchanged and not expired."""
    if not value or value.count(".") != 1 or len(value) > 4096:
        return None
    body, mac = value.split(".")
    if not hmac.compare_digest(mac, _mac(body, key)):
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        session = Session(**data)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None
    return session if session.expires > now else None


def cookie_value(header: str | None) -> str | None:
    """Our cookie's value from a Cookie header. Read here rather than through aiohttp's
    parser (``http.cookies`` rules, ~30 µs a request, the most of a 304's cost): the value is
    ours, base64url and a dot (quoted by older cookies, whose MAC kept its "=" padding);
    anything else fails ``opened``."""
    if not header:
        return None
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    return None


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf, sent)


def _mac(body: str, key: bytes) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")  # no "=": never quoted


def session_key(path: Path) -> bytes:
    """The nodes' shared session key (32 random bytes, base64 in a 0600 file), made on first use.
    Written whole under another name and linked into place, so a node starting beside another
    reads either no file or the whole key, never a half-written one."""
    if path.exists():
        return base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(secret).decode() + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:  # another node or worker made it first: theirs is the key
        return base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    finally:
        draft.unlink()
    return secret
