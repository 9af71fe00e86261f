"""Logging: JSON lines, a request id on every line, personal data and secrets masked."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog

from gateway.logs import (
    configure_logging,
    get_logger,
    mask_text,
    masked_for_display,
    redact_personal_data,
)

VALID_ID = "11010519491231002X"


def _render(**event: Any) -> dict[str, Any]:
    return dict(redact_personal_data(None, "info", dict(event)))


def test_resident_id_is_masked_inside_text() -> None:
    out = mask_text(f"applicant {VALID_ID} filed")
    assert VALID_ID not in out
    assert out == "applicant 110***********002X filed"


def test_matter_codes_are_not_mistaken_for_ids() -> None:
    implementation_code = "11650000010183859F2650116013001"  # 31-char 实施编码
    assert mask_text(implementation_code) == implementation_code
    assert mask_text("region 420607") == "region 420607"
    assert mask_text("ts 1732780000123") == "ts 1732780000123"


def test_phone_numbers_are_masked() -> None:
    assert mask_text("call 13812345678 now") == "call 138****5678 now"
    assert mask_text("call +86 13812345678") == "call +86 138****5678"


def test_secret_and_personal_keys_are_masked_recursively() -> None:
    event = _render(
        event="x",
        passphrase="hunter2",
        nested={"api_key": "k", "aac003": "张三", "ok": "visible", "rows": [VALID_ID]},
        authorization="Bearer abc",
    )
    assert event["passphrase"] == "***"
    assert event["authorization"] == "***"
    assert event["nested"]["api_key"] == "***"
    assert event["nested"]["aac003"] == "***"
    assert event["nested"]["ok"] == "visible"
    assert VALID_ID not in json.dumps(event)


def test_json_lines_carry_bound_request_id_and_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    structlog.contextvars.bind_contextvars(request_id="req-12345678")
    try:
        get_logger("t").info("case.filed", id_number=VALID_ID, note=f"id {VALID_ID}")
    finally:
        structlog.contextvars.clear_contextvars()
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-12345678"
    assert line["event"] == "case.filed"
    assert VALID_ID not in stream.getvalue()


class _Writes(io.StringIO):
    """A stream that keeps each write call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write_so_workers_sharing_stderr_never_interleave() -> None:
    import logging

    stream = _Writes()
    configure_logging("info", "json", stream)
    get_logger("t").info("store.at_rest", values_sealed=3)
    logging.getLogger("some.library").warning("peer went away")
    assert len(stream.calls) == 2
    for call in stream.calls:  # a whole JSON line per write, newline included
        assert call.endswith("\n") and call.count("\n") == 1
        json.loads(call)


def test_stdlib_loggers_go_through_redaction() -> None:
    import logging

    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("some.library").warning("peer sent %s", VALID_ID)
    assert VALID_ID not in stream.getvalue()
    assert "110***********002X" in stream.getvalue()


def test_zeep_never_logs_at_debug() -> None:
    import logging

    configure_logging("debug", "json", io.StringIO())
    assert logging.getLogger("zeep.transports").getEffectiveLevel() >= logging.INFO


def test_a_clients_malformed_request_is_a_warning_and_our_own_errors_stay_errors() -> None:
    import logging

    from aiohttp.http_exceptions import BadHttpMessage

    def logged(level: str, error: Exception) -> list[dict[str, Any]]:
        stream = io.StringIO()
        configure_logging(level, "json", stream)
        try:
            raise error
        except Exception:
            logging.getLogger("aiohttp.server").exception("Error handling request")
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    (line,) = logged("info", BadHttpMessage("Invalid header value char"))
    assert (line["level"], line["error_type"], line["status"]) == ("warning", "BadHttpMessage", 400)
    assert logged("error", BadHttpMessage("x")) == []  # below the level asked for
    (line,) = logged("error", RuntimeError("a bug of ours"))
    assert (line["level"], line["error_type"]) == ("error", "RuntimeError")


def test_pages_show_staff_personal_fields_masked_to_their_ends() -> None:
    answer = {
        "applicant": {"id_number": "411329198506150034", "name": "张三丰", "phone": "13800138000"},
        "rows": [{"aac002": "P1234567", "year": 2006}],  # not shaped like a 身份证号: masked still
        "note": "申请人 411329198506150034 已核验",
        "scheme": "urban_employee",
    }
    assert masked_for_display(answer) == {
        "applicant": {"id_number": "411***********0034", "name": "张**", "phone": "138****8000"},
        "rows": [{"aac002": "****4567", "year": 2006}],
        "note": "申请人 411***********0034 已核验",
        "scheme": "urban_employee",
    }
