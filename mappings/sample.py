"""SAMPLE catalogue generator: the 126 跨省通办 matters of the 襄州 ⇄ 新野 agreement (and 襄十随神).

Matter names are real 政务服务事项 names across 公安, 教育, 医保, 社保 and 住建; the codes are
generated and structurally valid (GB 32100 USCC agencies, 行使层级, 12-character 基本编码) but are
NOT the real codes of these agencies. ``python -m mappings.sample DIR`` rewrites the sample CSVs and
the generated mapping-set files; ``large_catalogue(n)`` makes the 1,631-matter benchmark catalogue.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mappings.catalogue import Matter, render_catalogue_csv
from mappings.identifiers import make_uscc
from mappings.source import Location

# (domain code, domain, [(name, matter type)])
MATTERS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "GA",
        "公安",
        [
            ("户口迁移（迁入）", "行政许可"),
            ("户口迁移（迁出）", "公共服务"),
            ("居民身份证换领", "行政确认"),
            ("居民身份证补领", "行政确认"),
            ("临时居民身份证申领", "行政确认"),
            ("居民户口簿补领", "公共服务"),
            ("户籍证明开具", "公共服务"),
            ("出生登记（新生儿入户）", "行政确认"),
            ("死亡人员户口注销", "公共服务"),
            ("父母投靠子女落户", "行政许可"),
            ("居住证申领", "行政确认"),
            ("流动人口居住登记", "公共服务"),
            ("无犯罪记录证明开具", "公共服务"),
            ("普通护照签发", "行政许可"),
            ("往来港澳通行证签注", "行政许可"),
            ("往来台湾通行证签注", "行政许可"),
            ("机动车驾驶证补领", "行政许可"),
            ("机动车驾驶证换领", "行政许可"),
            ("机动车驾驶证审验", "行政确认"),
            ("机动车检验标志核发", "行政确认"),
            ("机动车行驶证补领", "行政确认"),
            ("机动车转移登记", "行政确认"),
            ("机动车注销登记", "行政确认"),
            ("驾驶人体检信息备案", "公共服务"),
            ("交通违法处理", "行政处罚"),
        ],
    ),
    (
        "JY",
        "教育",
        [
            ("学籍转接（义务教育）", "公共服务"),
            ("普通高中学籍转接", "公共服务"),
            ("中等职业学校学籍转接", "公共服务"),
            ("教师资格认定", "行政许可"),
            ("教师资格证书补发换发", "行政许可"),
            ("教师资格定期注册", "行政确认"),
            ("普通话水平测试等级证书补发", "公共服务"),
            ("普通话水平测试成绩查询", "公共服务"),
            ("学历证书遗失补办证明", "公共服务"),
            ("高中毕业证书补办证明", "公共服务"),
            ("中等职业学校毕业证书补办证明", "公共服务"),
            ("随迁子女义务教育入学", "公共服务"),
            ("随迁子女入园", "公共服务"),
            ("学生资助申请", "行政给付"),
            ("家庭经济困难学生认定", "行政确认"),
            ("学前教育资助", "行政给付"),
            ("高校毕业生就业报到证改派", "公共服务"),
            ("高等教育自学考试转考", "公共服务"),
            ("自学考试成绩证明", "公共服务"),
            ("学历学位认证", "公共服务"),
        ],
    ),
    (
        "YB",
        "医保",
        [
            ("异地就医备案（异地长期居住人员）", "公共服务"),
            ("异地就医备案（临时外出就医人员）", "公共服务"),
            ("异地安置退休人员备案", "公共服务"),
            ("异地转诊人员备案", "公共服务"),
            ("基本医疗保险关系转移接续", "公共服务"),
            ("医疗费用手工（零星）报销", "行政给付"),
            ("生育保险待遇核定与支付", "行政给付"),
            ("门诊慢特病待遇认定", "行政确认"),
            ("参保信息变更", "公共服务"),
            ("城乡居民参保登记", "公共服务"),
            ("参保缴费凭证打印", "公共服务"),
            ("医保电子凭证激活", "公共服务"),
            ("异地就医费用查询", "公共服务"),
            ("职工医保个人账户一次性支取", "行政给付"),
            ("职工医保个人账户家庭共济", "公共服务"),
            ("灵活就业人员参保登记", "公共服务"),
            ("医疗救助申请", "行政给付"),
            ("生育津贴支付", "行政给付"),
            ("门诊费用跨省直接结算", "公共服务"),
            ("住院费用跨省直接结算", "公共服务"),
            ("医保关系暂停", "公共服务"),
            ("医保缴费年限核定", "行政确认"),
            ("大病保险待遇", "行政给付"),
            ("长期护理保险待遇", "行政给付"),
            ("新生儿参保登记", "公共服务"),
        ],
    ),
    (
        "SB",
        "社保",
        [
            ("基本养老保险关系转移接续（联系函）", "公共服务"),
            ("基本养老保险参保缴费信息表核转", "公共服务"),
            ("机关事业单位养老保险关系转移接续", "公共服务"),
            ("城乡养老保险制度衔接", "公共服务"),
            ("失业保险关系转移接续", "公共服务"),
            ("失业保险金申领", "行政给付"),
            ("社会保障卡申领", "公共服务"),
            ("社会保障卡补领换领", "公共服务"),
            ("社会保障卡挂失解挂", "公共服务"),
            ("社会保障卡信息变更", "公共服务"),
            ("养老保险待遇资格认证", "公共服务"),
            ("养老保险个人权益记录查询打印", "公共服务"),
            ("参保缴费凭证开具", "公共服务"),
            ("工伤保险待遇申领（异地居住）", "行政给付"),
            ("工伤职工异地就医备案", "公共服务"),
            ("企业职工基本养老保险待遇申领", "行政给付"),
            ("丧葬补助金抚恤金申领", "行政给付"),
            ("个人账户一次性待遇申领", "行政给付"),
            ("城乡居民养老保险待遇申领", "行政给付"),
            ("就业创业证申领", "公共服务"),
            ("就业登记", "公共服务"),
            ("失业登记", "公共服务"),
            ("职业资格证书核验", "公共服务"),
            ("技能人员职业资格证书查询", "公共服务"),
            ("流动人员人事档案转递", "公共服务"),
            ("高校毕业生档案转递", "公共服务"),
            ("社会保险参保证明打印", "公共服务"),
            ("领取养老金人员待遇资格协助认证", "公共服务"),
            ("暂停养老保险待遇", "公共服务"),
            ("恢复养老保险待遇", "公共服务"),
        ],
    ),
    (
        "ZJ",
        "住建",
        [
            ("住房公积金异地转移接续", "公共服务"),
            ("住房公积金缴存证明出具", "公共服务"),
            ("住房公积金单位登记开户", "公共服务"),
            ("住房公积金个人账户设立", "公共服务"),
            ("住房公积金异地个人住房贷款", "公共服务"),
            ("提前部分偿还住房公积金贷款", "公共服务"),
            ("住房公积金贷款全部还清", "公共服务"),
            ("住房公积金提取（购房）", "公共服务"),
            ("住房公积金提取（租房）", "公共服务"),
            ("住房公积金提取（离退休）", "公共服务"),
            ("住房公积金提取（离职）", "公共服务"),
            ("住房公积金提取（出境定居）", "公共服务"),
            ("住房公积金贷款缴存使用证明", "公共服务"),
            ("住房公积金个人信息变更", "公共服务"),
            ("住房公积金汇缴", "公共服务"),
            ("住房公积金补缴", "公共服务"),
            ("异地贷款职工住房公积金缴存使用证明", "公共服务"),
            ("商品房预售资金监管查询", "公共服务"),
            ("房屋交易合同网签备案", "行政确认"),
            ("二级建造师执业资格注册", "行政许可"),
            ("建筑施工企业安全生产许可证变更", "行政许可"),
            ("建筑业企业资质证书变更", "行政许可"),
            ("特种作业人员操作资格证书查询", "公共服务"),
            ("房地产经纪机构备案", "行政确认"),
            ("物业服务企业信息查询", "公共服务"),
            ("公共租赁住房申请（外来务工人员）", "行政确认"),
        ],
    ),
]
TYPE_CODES = {
    "行政许可": "01",
    "行政处罚": "02",
    "行政强制": "03",
    "行政征收": "04",
    "行政给付": "05",
    "行政检查": "06",
    "行政确认": "07",
    "行政奖励": "08",
    "行政裁决": "09",
    "其他行政权力": "10",
    "公共服务": "20",
}
DOMAIN_CODES = {"GA": "11", "JY": "12", "YB": "31", "SB": "32", "ZJ": "41"}

# region: (code prefix, level, agencies by domain)
JURISDICTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "420607": (
        "XZ",
        "4",
        {
            "GA": "襄阳市公安局襄州分局",
            "JY": "襄阳市襄州区教育局",
            "YB": "襄阳市襄州区医疗保障局",
            "SB": "襄阳市襄州区人力资源和社会保障局",
            "ZJ": "襄阳住房公积金中心襄州分中心",
        },
    ),
    "411329": (
        "XY",
        "4",
        {
            "GA": "新野县公安局",
            "JY": "新野县教育局",
            "YB": "新野县医疗保障局",
            "SB": "新野县人力资源和社会保障局",
            "ZJ": "南阳市住房公积金管理中心新野分中心",
        },
    ),
    "420300": (
        "SY",
        "3",
        {
            "GA": "十堰市公安局",
            "JY": "十堰市教育局",
            "YB": "十堰市医疗保障局",
            "SB": "十堰市人力资源和社会保障局",
            "ZJ": "十堰市住房公积金中心",
        },
    ),
    "421300": (
        "SZ",
        "3",
        {
            "GA": "随州市公安局",
            "JY": "随州市教育局",
            "YB": "随州市医疗保障局",
            "SB": "随州市人力资源和社会保障局",
            "ZJ": "随州市住房公积金中心",
        },
    ),
    "429021": (
        "SNJ",
        "3",
        {
            "GA": "神农架林区公安局",
            "JY": "神农架林区教育局",
            "YB": "神农架林区医疗保障局",
            "SB": "神农架林区人力资源和社会保障局",
            "ZJ": "神农架林区住房公积金中心",
        },
    ),
}
# 新野 (Henan) splits and merges matters differently from 襄州 (see mapping-sets):
PARTNER_SPLITS = {
    "基本养老保险关系转移接续（联系函）": [
        ("企业职工基本养老保险关系转移接续", "公共服务"),
        ("城乡居民基本养老保险关系转移接续", "公共服务"),
    ]
}
PARTNER_MERGES = {
    "异地就医备案（异地长期居住人员）": "异地就医备案",
    "异地就医备案（临时外出就医人员）": "异地就医备案",
}


def _agency_code(region: str, domain_index: int) -> str:
    return make_uscc("11", region, f"{int(region) % 9973:04d}{domain_index:02d}01")


def _basic_code(matter_type: str, domain: str, serial: int) -> str:
    return f"{TYPE_CODES[matter_type]}{DOMAIN_CODES[domain]}{serial:08d}"


def catalogue_for(region: str) -> list[Matter]:
    prefix, level, agencies = JURISDICTIONS[region]
    henan = region.startswith("41")
    matters: list[Matter] = []
    for domain_index, (domain, domain_name, names) in enumerate(MATTERS, start=1):
        agency = agencies[domain]
        agency_code = _agency_code(region, domain_index)
        serial = 0
        seen_merged: set[str] = set()
        for national_index, (name, matter_type) in enumerate(names, start=1):
            variants = [(name, matter_type)]
            if henan and name in PARTNER_SPLITS:
                variants = PARTNER_SPLITS[name]
            elif henan and name in PARTNER_MERGES:
                merged = PARTNER_MERGES[name]
                if merged in seen_merged:
                    continue
                seen_merged.add(merged)
                variants = [(merged, matter_type)]
            for variant_index, (variant, variant_type) in enumerate(variants):
                serial += 1
                # 基本编码 is national: the same matter has the same one in every jurisdiction.
                basic = _basic_code(variant_type, domain, national_index * 100 + variant_index)
                matters.append(
                    Matter(
                        region=region,
                        basic_code=basic,
                        implementation_code=f"{agency_code}{level}{basic}",
                        name=variant,
                        agency=agency,
                        agency_code=agency_code,
                        matter_type=variant_type,
                        level=level,
                        local_code=f"{prefix}-{domain}-{serial:03d}",
                        domain=domain_name,
                        department=agency,
                        cross_province=True,
                        where=Location("sample", 0),
                    )
                )
    return matters


def large_catalogue(count: int, region: str = "420607") -> list[Matter]:
    """The article's full scale (1,631 local matters) for the load benchmark, structurally valid."""
    base = catalogue_for(region)
    matters = list(base)
    serial = 0
    while len(matters) < count:
        template = base[serial % len(base)]
        serial += 1
        basic = f"{TYPE_CODES[template.matter_type]}99{serial:08d}"
        matters.append(
            Matter(
                **{
                    **template.__dict__,
                    "basic_code": basic,
                    "implementation_code": template.agency_code + template.level + basic,
                    "name": f"{template.name}（样例{serial}）",
                    "local_code": f"XZ-BENCH-{serial:05d}",
                    "cross_province": False,
                }
            )
        )
    return matters


def write_sample(folder: Path) -> None:
    (folder / "catalogue").mkdir(parents=True, exist_ok=True)
    for region in JURISDICTIONS:
        text = render_catalogue_csv(catalogue_for(region))
        (folder / "catalogue" / f"{region}.csv").write_text(text, encoding="utf-8")


SPECIFIC_TRANSFORMS = {
    "户口迁移（迁出）": "household_migration",
    "学籍转接（义务教育）": "school_transfer",
    "异地就医备案（异地长期居住人员）": "medical_registration",
    "异地就医备案（临时外出就医人员）": "medical_registration",
    "医疗费用手工（零星）报销": "medical_reimbursement",
    "基本养老保险关系转移接续（联系函）": "pension_contact_letter",
    "基本养老保险参保缴费信息表核转": "pension_information_form",
    "住房公积金异地转移接续": "housing_fund_transfer",
}
PENSION_BRANCHES = {
    "企业职工基本养老保险关系转移接续": "urban_employee",
    "城乡居民基本养老保险关系转移接续": "urban_rural_resident",
}
REGISTRATION_KIND = {
    "异地就医备案（异地长期居住人员）": "1",
    "异地就医备案（临时外出就医人员）": "2",
}


def mapping_entries(local: str, partner: str) -> list[str]:
    """YAML lines of the generated one-to-one/one-to-many/many-to-one entries."""
    partner_by_name = {m.name: m for m in catalogue_for(partner)}
    lines: list[str] = []
    for matter in catalogue_for(local):
        transform = SPECIFIC_TRANSFORMS.get(matter.name, "generic_application")
        lines.append(f"  - local: {matter.local_code}  # {matter.name}")
        if matter.name in PARTNER_SPLITS and partner.startswith("41"):
            lines.append("    to:")
            for variant, _type in PARTNER_SPLITS[matter.name]:
                lines.append(
                    f"      - when: {{field: pension.scheme, equals: {PENSION_BRANCHES[variant]}}}"
                )
                lines.append(f"        partner: {partner_by_name[variant].local_code}  # {variant}")
                lines.append(f"        transform: {transform}")
            continue
        target = (
            partner_by_name.get(
                PARTNER_MERGES.get(matter.name, "") if partner.startswith("41") else ""
            )
            or partner_by_name[matter.name]
        )
        lines.append(f"    partner: {target.local_code}")
        lines.append(f"    transform: {transform}")
        if matter.name in PARTNER_MERGES and partner.startswith("41"):
            lines.append(
                f'    inbound_when: {{field: dcla_type, equals: "{REGISTRATION_KIND[matter.name]}"}}'
            )
    return lines


def write_mapping_sets(folder: Path, local: str = "420607") -> None:
    for partner in JURISDICTIONS:
        if partner == local:
            continue
        target = folder / "mapping-sets" / f"{local}-{partner}"
        target.mkdir(parents=True, exist_ok=True)
        # the newest version stays in force until a later one is written beside it: a sample
        # that expires on a fixed date would stop the default setup (and its tests) that day
        successor = any(p.name != "2026.1.yaml" for p in target.glob("*.yaml"))
        header = [
            f"# SAMPLE mapping {local} ⇄ {partner}, generated by `python -m mappings.sample`;",
            "# edit freely: it is data, loaded and linted like any hand-written file.",
            'version: "2026.1"',
            "effective_from: 2026-01-01",
            *(["effective_to: 2026-12-31"] if successor else []),
            "matters:",
        ]
        (target / "2026.1.yaml").write_text(
            "\n".join(header + mapping_entries(local, partner)) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    write_sample(out)
    write_mapping_sets(out)
