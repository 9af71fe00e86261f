"""What partners may say inside their sealed messages, checked before it touches any state.

A partner's answer to one of our messages (a reply, or a result it reports later), and its
status query, are authenticated by the envelope, not trusted by it: an authentic sender can
still send a ``code`` that is an object or a two-megabyte ``message``. Each body passes its
model here — types, lengths, character classes (``rules.text``) and an overall size — or is
refused with ``ANSWER_MALFORMED``'s location and reason; nothing of it is stored otherwise.

Limits (also in docs/envelope.md §7): ``code`` 1–64 characters ``[A-Z][A-Z0-9_]*``;
``message`` at most 1,000 characters of text; ``receipt_no`` 1–64 characters
``[A-Za-z0-9._:-]``; ``result`` a JSON object of at most 256 KiB, 64 levels deep, whose
keys and strings are text.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from rules.text import check_text, first_text_problem

Model = TypeVar("Model", bound=BaseModel)
MAX_MESSAGE_CHARS = 1000
MAX_RESULT_BYTES = 256 * 1024

AnswerCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")]
Reference = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
Message = Annotated[
    str,
    Field(max_length=MAX_MESSAGE_CHARS),
    AfterValidator(lambda value: check_text(value, multiline=True)),
]


def _bounded_object(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_RESULT_BYTES:
        raise ValueError(f"larger than {MAX_RESULT_BYTES // 1024} KiB")
    found = first_text_problem(value)
    if found is not None:
        raise ValueError(f"{found[0]}: {found[1]}")
    return value


class PartnerAnswer(BaseModel):
    """A partner's answer to one of our messages, or a result it reports later."""

    model_config = ConfigDict(strict=True, extra="ignore")  # fields we do not know: not kept
    status: Literal["accepted", "rejected", "pending"]
    code: AnswerCode | None = None
    message: Message | None = None
    receipt_no: Reference | None = None
    result: Annotated[dict[str, Any], AfterValidator(_bounded_object)] | None = None


class StatusQuery(BaseModel):
    """A partner asks about a case it filed."""

    model_config = ConfigDict(strict=True, extra="forbid")
    receipt_no: Reference


class AnswerMalformed(ValueError):
    """The first problem of a partner's body, located (``status``, ``result.aac001``…)."""


def parse(model: type[Model], body: Any) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise AnswerMalformed(f"{where}: {first['msg']}") from None
