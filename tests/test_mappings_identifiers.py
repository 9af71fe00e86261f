"""GB 11643 / GB 32100 / GB/T 2260 / 实施编码 checks."""

from __future__ import annotations

import pytest
from stdnum.cn import ric

from mappings import identifiers as ids


def test_resident_id() -> None:
    assert ids.check_resident_id("11010519491231002x") == "11010519491231002X"
    assert ids.sex_of("11010519491231002X") == "female"
    assert str(ids.birth_date_of("411329198506150034")) == "1985-06-15"
    for bad, reason in [
        ("11010519491231002", "17 digits"),
        ("110105194912310021", "check digit"),
        ("110105194913310021", "birth date|check digit"),
        ("99010519491231002X", "check digit|region"),
        ("1101051949123100X2", "17 digits"),
    ]:
        with pytest.raises(ids.IdentifierError, match=reason):
            ids.check_resident_id(bad)


def _with_check_digit(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


def test_resident_id_birth_date_is_a_real_day_not_after_today() -> None:
    from datetime import date, timedelta

    today = date.today()
    born_today = _with_check_digit(f"420607{today:%Y%m%d}001")
    assert ids.check_resident_id(born_today) == born_today
    tomorrow = _with_check_digit(f"420607{today + timedelta(days=1):%Y%m%d}001")
    with pytest.raises(ids.IdentifierError, match="in the future"):
        ids.check_resident_id(tomorrow)
    for not_a_day in ("19490230", "20230229", "19491301", "00000101"):
        with pytest.raises(ids.IdentifierError, match="not a date"):
            ids.check_resident_id(_with_check_digit(f"420607{not_a_day}001"))
    assert ids.check_resident_id(_with_check_digit("42060720240229001"))  # a leap day
    with pytest.raises(ids.IdentifierError, match="17 digits"):
        ids.check_resident_id(420607198203040056)  # type: ignore[arg-type]


def test_region_code_assigned_after_birth_is_accepted() -> None:
    # 襄州区 (420607) exists since 2001; a person born in 1982 may hold it (GB 11643 assigns the
    # code where the number was first issued). python-stdnum's own validate() would refuse it.
    from stdnum.cn import ric

    assert not ric.is_valid("420607198203040056")
    assert ids.check_resident_id("420607198203040056") == "420607198203040056"


def test_uscc_and_implementation_codes() -> None:
    assert ids.check_uscc("91110000600037341L")
    with pytest.raises(ids.IdentifierError):
        ids.check_uscc("91110000600037341M")
    # the brief's real 实施编码 examples
    ids.check_implementation_code("11650000010183859F2650116013001")
    ids.check_implementation_code("11370800MB285591843370117002011")
    with pytest.raises(ids.IdentifierError, match="agency part"):
        ids.check_implementation_code("11650000010183859E2650116013001")
    with pytest.raises(ids.IdentifierError, match="level"):
        ids.check_implementation_code("11650000010183859F7650116013001")
    with pytest.raises(ids.IdentifierError, match="31"):
        ids.check_implementation_code("11650000010183859F265011601300")
    with pytest.raises(ids.IdentifierError, match="基本编码"):
        ids.check_implementation_code("11650000010183859F2650116013001", "650116013002")
    generated = ids.make_uscc("11", "420607", "17410101")
    assert ids.check_uscc(generated)


def test_region_codes_of_every_party() -> None:
    assert ids.region_name("420607") == "湖北省襄州区"
    assert ids.region_name("411329") == "河南省新野县"
    for code in ("420300", "421300", "429021"):
        assert ids.check_region(code)
    with pytest.raises(ids.IdentifierError):
        ids.check_region("420621")  # 襄阳县: historical, no longer current
    with pytest.raises(ids.IdentifierError):
        ids.check_region("429999")


def test_made_up_region_codes_do_not_grow_memory_without_bound() -> None:
    """IDs arrive from strangers: a million made-up region prefixes, each with a valid check
    digit, must not each leave a cached entry behind."""
    refused = 0
    for prefix in range(100_000, 130_000):  # a few are real (110105: 北京市朝阳区)
        body = f"{prefix}19900101001"
        try:
            ids.check_resident_id(body + ric.calc_check_digit(body))
        except ids.IdentifierError:
            refused += 1
    assert refused > 29_000
    cached = ids.region_name.cache_info()
    assert cached.maxsize is not None and cached.currsize <= cached.maxsize < 30_000
