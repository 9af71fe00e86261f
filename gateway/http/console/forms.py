"""The filing form, generated from the mapping data, and its problems in Chinese. Pure.

A bundle's (or a single matter's) form is every local field the transforms of its sub-matters
read, in the order they first appear, grouped by their top-level part (申请人, 转移信息, …); a
field is required if any transform requires it. The page posts flat names (``applicant.name``,
``receipts.0.total``); ``nested`` rebuilds the form the windows API takes, leaving out what was
left empty, so that "required" is the mapping data's to say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from mappings.catalogue import Bundle
from mappings.materials import Material
from mappings.registry import Registry
from mappings.transform import Rule

LIST_ROWS = 3  # rows offered for a list (e.g. 票据); empty ones are left out

# Labels of the field names the SAMPLE mapping data uses; a name not here shows as itself.
LABELS = {
    "applicant": "申请人", "id_number": "公民身份号码", "name": "姓名", "phone": "联系电话",
    "pension": "养老保险", "scheme": "险种", "personal_number": "个人编号",
    "transfer": "转移信息", "contact_letter_no": "联系函编号", "in_region": "转入地",
    "out_region": "转出地", "reason": "转移原因", "letter_date": "联系函日期",
    "receiving_agency": "转入地经办机构", "address": "地址", "bank_account_name": "开户名",
    "bank_name": "开户银行", "bank_account": "银行账号", "request": "申请",
    "summary": "申请事项", "date": "日期", "depositor": "缴存人", "fund": "公积金",
    "from_region": "转出地", "from_account": "转出账户", "to_region": "转入地",
    "to_account": "转入账户", "to_employer": "转入单位", "expected_amount": "预计金额（元）",
    "request_date": "申请日期", "insured": "参保人", "region": "参保地", "treatment": "就医信息",
    "hospital_code": "医院编码", "hospital_name": "医院名称", "admission_date": "入院日期",
    "discharge_date": "出院日期", "medical_type": "医疗类别", "insurance_type": "险种类型",
    "registration": "备案", "record_no": "备案号", "start_date": "开始日期",
    "end_date": "结束日期", "claim": "报销申请", "receipts": "票据", "total": "金额（元）",
    "self_paid": "自付金额（元）", "payee": "收款人", "account": "账号", "student": "学生",
    "from_school": "转出学校", "to_school": "转入学校", "grade": "年级",
    "guardian": "监护人", "migration": "迁移信息", "permit_no": "准迁证编号",
    "to_address": "迁入地址", "relationship_to_head": "与户主关系", "kind": "类别",
    "certificate_type": "证件类型", "issued_date": "签发日期", "person": "人员",
    "record": "记录", "contributions": "缴费记录", "paid_months": "缴费月数",
    "first_paid_month": "首次缴费年月", "personal_account_transfer": "个人账户转移额（元）",
    "pooled_fund_transfer": "统筹基金转移额（元）", "number": "票据号", "amount": "金额（元）",
}  # fmt: skip

# What each type of field is, for the page (an input type and a hint).
INPUTS = {
    "date": ("date", "YYYY-MM-DD"),
    "resident_id": ("text", "18 位，末位可为 X"),
    "region": ("text", "6 位行政区划代码"),
    "amount": ("text", "元，如 1234.50"),
}


@dataclass(frozen=True)
class FormField:
    path: str  # applicant.id_number; a list's fields: receipts.*.total
    label: str
    type: str
    required: bool
    max_length: int | None
    choices: tuple[str, ...]  # a code table's local codes (none: free input)
    input: str  # the HTML input type
    hint: str


@dataclass(frozen=True)
class FormSection:
    key: str
    label: str
    fields: tuple[FormField, ...]
    rows: int = 0  # a list of rows (票据): how many are offered; 0 for plain fields

    @property
    def plain(self) -> tuple[FormField, ...]:
        return tuple(f for f in self.fields if ".*." not in f.path)

    @property
    def listed(self) -> tuple[FormField, ...]:
        """The fields of each row of the section's list, if it has one."""
        return tuple(f for f in self.fields if ".*." in f.path)


ACCEPT = {"pdf": ".pdf", "ofd": ".ofd", "jpeg": ".jpg,.jpeg", "png": ".png"}


def accept(types: tuple[str, ...]) -> str:
    """A file input's ``accept`` for these types: a hint to the browser; the type is told by
    content."""
    return ",".join(ACCEPT[t] for t in types)


def material_fields(registry: Registry, region: str, bundle: Bundle) -> tuple[Material, ...]:
    """Every material the bundle's matters ask for, once: the first matter's, required if any
    matter requires it, with an 电子证照 if any matter takes one."""
    found: dict[str, Material] = {}
    for sub in bundle.sub_matters:
        for material in registry.materials_of(region, sub.matter):
            seen = found.setdefault(material.code, material)
            found[material.code] = replace(
                seen,
                required=seen.required or material.required,
                licence_type=seen.licence_type or material.licence_type,
            )
    return tuple(found.values())


def label_of(path: str) -> str:
    parts = [p for p in path.split(".") if p != "*"]
    return " · ".join(LABELS.get(p, p) for p in parts[1:] or parts)


def _rules_of(registry: Registry, region: str, matter: str, on: date) -> tuple[Rule, ...]:
    """The local fields a sub-matter's transform reads, whichever partner it goes to (the
    mapping sets share their transforms by matter; the first in force that maps it is taken)."""
    for (local, _partner), versions in sorted(registry.mapping_sets.items()):
        if local != region:
            continue
        for version in versions:
            entry = version.entries.get(matter)
            if entry is not None and version.in_force(on) and entry.targets:
                return registry.transforms[entry.targets[0].transform].rules
    return ()


def form_sections(registry: Registry, region: str, bundle: Bundle, on: date) -> list[FormSection]:
    fields: dict[str, FormField] = {}
    for sub in bundle.sub_matters:
        for rule in _rules_of(registry, region, sub.matter, on):
            for path, field in _fields(registry, rule, ""):
                known = fields.get(path)
                if known is None or (field.required and not known.required):
                    fields[path] = field if known is None else _required(known)
    sections: dict[str, list[FormField]] = {}
    for path, field in fields.items():
        sections.setdefault(path.split(".")[0], []).append(field)
    return [
        FormSection(
            key,
            LABELS.get(key, key),
            tuple(members),
            LIST_ROWS if any(".*." in f.path for f in members) else 0,
        )
        for key, members in sections.items()
    ]


def _required(field: FormField) -> FormField:
    return FormField(
        field.path, field.label, field.type, True, field.max_length, field.choices, field.input,
        field.hint,
    )  # fmt: skip


def _fields(registry: Registry, rule: Rule, prefix: str) -> list[tuple[str, FormField]]:
    if rule.local is None:
        return []  # derived or constant: nothing for the clerk to fill in
    path = prefix + ".".join(rule.local)
    if rule.items:
        found: list[tuple[str, FormField]] = []
        for item in rule.items:
            found += _fields(registry, item, path + ".*.")
        return found
    table = registry.tables.get(rule.table) if rule.table else None
    choices = tuple(sorted(table.forward)) if table is not None else ()
    kind, hint = INPUTS.get(rule.type, ("text", ""))
    if rule.max_length:
        hint = hint or f"最多 {rule.max_length} 个字"
    return [
        (
            path,
            FormField(
                path,
                label_of(path),
                rule.type,
                rule.required,
                rule.max_length,
                choices,
                kind,
                hint,
            ),
        )
    ]


_INDEX = re.compile(r"^(0|[1-9][0-9]?)$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def nested(posted: dict[str, str], allowed: set[str]) -> dict[str, Any]:
    """The form the API takes, from the page's flat fields: only names the form offered
    (``allowed``, lists as ``a.*.b``), each value trimmed, empty ones left out."""
    form: dict[str, Any] = {}
    for name, raw in posted.items():
        parts = name.split(".")
        pattern = ".".join("*" if _INDEX.match(p) else p for p in parts)
        value = raw.strip()
        if (
            pattern not in allowed
            or not value
            or not all(_NAME.match(p) or _INDEX.match(p) for p in parts)
        ):
            continue
        node: Any = form
        for here in parts[:-1]:  # rows by index are keys here, made lists below
            node = node.setdefault(here, {})
        node[parts[-1]] = value
    built: dict[str, Any] = _lists(form)
    return built


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        if value and all(_INDEX.match(k) for k in value):
            return [_lists(value[k]) for k in sorted(value, key=int)]
        return {k: _lists(v) for k, v in value.items()}
    return value


# -- problems, in Chinese -----------------------------------------------------------------------

_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), text)
    for pattern, text in (
        (r"^is required$", "必填"),
        (r"check digit does not match", "公民身份号码校验位不正确"),
        (r"公民身份号码 must be 17 digits", "公民身份号码应为 17 位数字加 1 位校验码"),
        (r"birth date is not a date", "公民身份号码中的出生日期无效"),
        (r"birth date is in the future", "公民身份号码中的出生日期晚于今天"),
        (r"region code is not a GB/T 2260 code", "公民身份号码中的地区码无效"),
        (r"is not a current GB/T 2260 region code", "不是有效的行政区划代码"),
        (r"^longer than (\d+) characters$", r"不能超过 \1 个字"),
        (r"^must be a date yyyy-MM-dd$", "日期格式应为 YYYY-MM-DD"),
        (r"must be in \d+\.\.\d+|out of range|day is out", "日期无效"),
        (r"^must be a month", "年月格式应为 YYYY-MM"),
        (r"^must be an amount in 元", "金额格式应为元，最多两位小数，如 1234.50"),
        (r"^unknown .* code", "不是可选的代码"),
        (r"^must be a string", "应为文字"),
        (r"统一社会信用代码", "统一社会信用代码无效"),
    )
)


def in_chinese(message: str) -> str:
    for pattern, text in _MESSAGES:
        found = pattern.search(message)
        if found:
            return found.expand(text)
    return f"填写有误（{message}）"


def field_of(location: str) -> str:
    """The page's field name of a problem's location ("form.receipts[1].total" →
    "receipts.1.total")."""
    path = location.removeprefix("form.").removeprefix("form")
    return re.sub(r"\[(\d+)\]", r".\1", path).strip(".")
