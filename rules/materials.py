"""What a material (申请材料) is called and what may stand in for it, in every room alike: the
catalogue declares materials by these codes and types, the envelope's manifest carries them,
and both APIs take 电子证照 references of this form (their check character and holder are
checked further where a case is filed: ``mappings.materials``, ``mappings.identifiers``)."""

from __future__ import annotations

MATERIAL_CODE = r"[a-z0-9][a-z0-9_-]{0,47}"
MATERIAL_TYPES = ("pdf", "ofd", "jpeg", "png")  # told by a file's content, never its name
LICENCE_IDENTIFIER = r"1\.2\.156\.3005\.2\.[0-9A-Za-z.]{1,100}"  # GB/T 36904 practice
LICENCE_HOLDER = r"[0-9A-Z]{18}"  # a 公民身份号码 or a 统一社会信用代码
