"""Codes are ASCII by definition; text is for people and carries no control characters.

A code or identifier (a region, a 身份证号, a message id, a matter code) matches its pattern
*whole* and in ASCII: ``re.ASCII`` so that ``\\d`` is ``[0-9]`` and not every script's digits
(a full-width ``１`` looks the same to a clerk and differs to a search), and ``fullmatch`` so
that ``$`` cannot admit a trailing line feed. Text (a name, a clerk, a partner's message) may be
any script but refuses C0/C1 control characters (NUL, CR, LF; a tab too) and the invisible
format characters that reorder or hide what a reader sees (bidi overrides and isolates such as
U+202E, zero-width characters, the BOM): they have no place in a name and every place in a
forged log line or a spoofed display.
"""

from __future__ import annotations

import re
from functools import lru_cache

# C0 and C1 controls, DEL; zero-width and bidi marks, embeddings, overrides and isolates;
# invisible operators; the BOM; interlinear annotation controls.
_FORBIDDEN_IN_TEXT = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)
# Multi-line text (a message, a reason) may hold line breaks, nothing else of the above.
_FORBIDDEN_IN_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)


@lru_cache(maxsize=256)
def code_pattern(pattern: str) -> re.Pattern[str]:
    """A code's pattern, compiled for ASCII (``\\d`` is ``[0-9]``, ``\\w`` is ``[A-Za-z0-9_]``).
    Anchors in ``pattern`` are harmless; use ``is_code``, which matches whole."""
    return re.compile(pattern, re.ASCII)


def is_code(pattern: str, value: object) -> bool:
    """``value`` is a string matching ``pattern`` whole, in ASCII."""
    return isinstance(value, str) and code_pattern(pattern).fullmatch(value) is not None


def text_problem(value: str, multiline: bool = False) -> str | None:
    """Why ``value`` is no acceptable text (naming the character's code point), or None."""
    found = (_FORBIDDEN_IN_LINES if multiline else _FORBIDDEN_IN_TEXT).search(value)
    if found is None:
        return None
    return f"contains the control or invisible character U+{ord(found.group()):04X}"


def check_text(value: str, multiline: bool = False) -> str:
    """``value`` if it is acceptable text, else ValueError saying why."""
    problem = text_problem(value, multiline)
    if problem is not None:
        raise ValueError(problem)
    return value


def first_text_problem(value: object, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The first (location, problem) of the text inside a JSON-like value — its keys too — or
    None. Deeper than 64 levels is itself a problem."""
    if depth > 64:
        return path or "$", "nested too deeply"
    if isinstance(value, str):
        problem = text_problem(value, multiline=True)
        return (path or "$", problem) if problem else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            problem = text_problem(str(key))
            if problem:
                return where, problem
            found = first_text_problem(item, where, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_text_problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
    return None
