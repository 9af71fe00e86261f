"""Console sessions (gateway/http/console/sessions.py): a cookie that opens only under our key,
unchanged and unexpired; CSRF secrets; renewal at most once a minute; the shared key file."""

from __future__ import annotations

import base64
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.http.console import sessions

KEY = b"k" * 32
NOW = 1_800_000_000.0  # SAMPLE time
IDLE = 15 * 60


def _session() -> sessions.Session:
    return sessions.new_session("clerk-1", "window", "襄州区政务服务中心", "ab" * 32, NOW, IDLE)


def test_a_sealed_session_opens_back_under_the_same_key_until_it_expires() -> None:
    session = _session()
    cookie = sessions.seal(session, KEY)
    assert sessions.opened(cookie, KEY, NOW + 1) == session
    assert '"' not in cookie and "=" not in cookie and ";" not in cookie  # sent as it is
    assert (
        sessions.opened(sessions.cookie_value(f"{sessions.COOKIE}={cookie}"), KEY, NOW) == session
    )
    assert sessions.opened(cookie, KEY, NOW + IDLE + 1) is None  # idle too long
    assert sessions.opened(cookie, b"x" * 32, NOW) is None  # another deployment's key


@pytest.mark.parametrize(
    "cookie",
    [None, "", "no-dot", "a.b.c", "x" * 5000, "e30.AAAA", "%%%.%%%"],
)
def test_anything_else_is_no_session(cookie: str | None) -> None:
    assert sessions.opened(cookie, KEY, NOW) is None


def test_a_changed_role_or_expiry_breaks_the_seal() -> None:
    body, mac = sessions.seal(_session(), KEY).split(".")
    for changed in (
        replace(_session(), role="admin"),
        replace(_session(), expires=NOW + 10 * IDLE),
    ):
        forged_body = sessions.seal(changed, KEY).split(".")[0]
        assert sessions.opened(f"{forged_body}.{mac}", KEY, NOW) is None
    assert sessions.opened(f"{body}.{mac}", KEY, NOW) is not None


def test_csrf_needs_the_sessions_own_secret() -> None:
    session = _session()
    assert sessions.csrf_ok(session, session.csrf)
    assert not sessions.csrf_ok(session, None)
    assert not sessions.csrf_ok(session, "")
    assert not sessions.csrf_ok(session, _session().csrf)  # another session's


def test_a_session_is_renewed_at_most_once_a_minute() -> None:
    session = _session()  # renewed at NOW
    assert not sessions.renewal_due(session, NOW + 2, IDLE)
    assert not sessions.renewal_due(session, NOW + sessions.RENEW_AFTER_SECONDS - 1, IDLE)
    assert sessions.renewal_due(session, NOW + sessions.RENEW_AFTER_SECONDS + 1, IDLE)
    later = sessions.renewed(session, NOW + 100, IDLE)
    assert later.expires == NOW + 100 + IDLE and not sessions.renewal_due(later, NOW + 101, IDLE)


def test_nodes_starting_at_once_share_one_whole_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "console-session.key"
    found: list[bytes] = []
    starts = [
        threading.Thread(target=lambda: found.append(sessions.session_key(path))) for _ in range(8)
    ]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert len(set(found)) == 1 and len(found[0]) == 32
    assert base64.b64decode(path.read_text()) == found[0]
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no drafts left


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (None, None),
        ("", None),
        ("xgw_console=abc.def", "abc.def"),
        ("theme=dark; xgw_console=abc.def; lang=zh", "abc.def"),
        ("xgw_console_old=1; other=xgw_console=2", None),
        ("xgw_console=", ""),
        ('xgw_console="abc.def="', "abc.def="),  # as a cookie with "=" in it comes back
    ],
)
def test_the_cookie_is_read_from_the_header_by_its_exact_name(
    header: str | None, value: str | None
) -> None:
    assert sessions.cookie_value(header) == value
