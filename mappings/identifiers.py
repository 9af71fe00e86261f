"""Identifier checks: 公民身份号码 (GB 11643), 统一社会信用代码 (GB 32100), 区划 (GB/T 2260),
政务服务事项 基本编码 / 实施编码. ``python-stdnum`` does the check digits and holds the region table.

One deliberate departure from ``stdnum.cn.ric.validate``: it refuses an ID whose region code was
not yet in force in the holder's birth year, but GB 11643 assigns the code of the residence when
the number was first issued, which can be later than birth (襄州区 420607 exists since 2001; a
resident born in 1990 and first registered there in 2005 holds 420607…). We check the code
exists in GB/T 2260 at any time, the birth date and the check digit.
"""

from __future__ import annotations

import re
from datetime import date
from functools import lru_cache

from stdnum import numdb
from stdnum.cn import ric, uscc

from rules.text import code_pattern, is_code

IMPLEMENTATION_CODE_LENGTH = 31
BASIC_CODE = code_pattern(r"[0-9A-Z]{12}")
LEVELS = {"1": "国家级", "2": "省级", "3": "市级", "4": "县级", "5": "乡级"}


class IdentifierError(ValueError):
    """A code that does not pass its standard's checks; the message says which check."""


# Bounded: the codes come from payloads, and a hostile sender can make up to a million six-digit
# ones (GB/T 2260 has a few thousand, past ones included).
@lru_cache(maxsize=16384)
def region_name(code: str, current_only: bool = False) -> str | None:
    """Name of a GB/T 2260 region code (province + county/city), or None if unknown."""
    if not is_code(r"[0-9]{6}", code):
        return None
    info: dict[str, str] = {}
    for _part, props in numdb.get("cn/loc").info(code):
        info.update(props)
    province, county = info.get("province"), info.get("county")
    if code.endswith("0000"):
        return province
    if not province or not county:
        return None
    names = []
    for entry in county.split(","):
        match = re.fullmatch(r"\[(\d*)-(\d*)\](.*)", entry)
        if match is None:
            names.append(entry)
        elif not current_only or not match.group(2):
            names.append(match.group(3))
    return f"{province}{names[-1]}" if names else None


def check_region(code: str) -> str:
    name = region_name(code, current_only=True)
    if name is None:
        raise IdentifierError(f"{code!r} is not a current GB/T 2260 region code")
    return code


RESIDENT_ID_SHAPE = r"[0-9]{17}[0-9Xx]"  # then the check digit, birth date and region are checked
_RESIDENT_ID = code_pattern(RESIDENT_ID_SHAPE).fullmatch
_LOADED_ON = date.today()


def check_resident_id(number: str) -> str:
    """A valid 18-character 公民身份号码 (upper-case X), or IdentifierError saying why not."""
    if type(number) is not str or _RESIDENT_ID(number) is None:
        raise IdentifierError("公民身份号码 must be 17 digits and a check character")
    number = number.upper()
    if ric.calc_check_digit(number) != number[-1]:
        raise IdentifierError("公民身份号码 check digit does not match (GB 11643)")
    try:  # eight ASCII digits: fromisoformat reads them as YYYYMMDD, nothing else
        born = date.fromisoformat(number[6:14])
    except ValueError:
        raise IdentifierError("公民身份号码 birth date is not a date") from None
    # Days only go forward: a birth date up to the day this module was loaded needs no clock.
    if born > _LOADED_ON and born > date.today():
        raise IdentifierError("公民身份号码 birth date is in the future")
    if region_name(number[:6]) is None:
        raise IdentifierError("公民身份号码 region code is not a GB/T 2260 code")
    return number


def birth_date_of(number: str) -> date:
    number = check_resident_id(number)
    return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))


def sex_of(number: str) -> str:
    """GB/T 2261.1 sex from the 17th digit: odd male, even female."""
    return "male" if int(check_resident_id(number)[16]) % 2 else "female"


def check_uscc(code: str) -> str:
    if not isinstance(code, str) or not uscc.is_valid(code):
        raise IdentifierError(f"{code!r} is not a valid 统一社会信用代码 (GB 32100 check digits)")
    return code


def organisation_check_digit(base8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    total = sum(
        alphabet.index(c) * w for c, w in zip(base8, (3, 7, 9, 10, 5, 8, 4, 2), strict=True)
    )
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def make_uscc(registration: str, region: str, org_body: str) -> str:
    """Build a structurally valid USCC: 2-char registration type + region + org code + check."""
    body = registration + region + org_body + organisation_check_digit(org_body)
    return body + uscc.calc_check_digit(body)


def check_basic_code(code: str) -> str:
    if not isinstance(code, str) or not BASIC_CODE.fullmatch(code):
        raise IdentifierError(f"{code!r}: 基本编码 must be 12 characters 0-9/A-Z")
    return code


def check_implementation_code(code: str, basic_code: str | None = None) -> str:
    """实施编码 = implementing agency's USCC (18) + 行使层级 (1) + 基本编码 (12)."""
    if not isinstance(code, str) or len(code) != IMPLEMENTATION_CODE_LENGTH:
        raise IdentifierError(f"{code!r}: 实施编码 must be {IMPLEMENTATION_CODE_LENGTH} characters")
    agency, level, basic = code[:18], code[18], code[19:]
    try:
        check_uscc(agency)
    except IdentifierError:
        raise IdentifierError(
            f"{code!r}: 实施编码 agency part {agency} fails the USCC check"
        ) from None
    if level not in LEVELS:
        raise IdentifierError(f"{code!r}: 实施编码 level {level!r} is not 1–5 (行使层级)")
    check_basic_code(basic)
    if basic_code is not None and basic != basic_code:
        raise IdentifierError(f"{code!r}: 实施编码 does not end with 基本编码 {basic_code}")
    return code
