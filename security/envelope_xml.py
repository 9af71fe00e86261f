"""XGW-ENV/1 in XML (the SOAP body carries it): one element per field, same strings as JSON.

    <env:Envelope xmlns:env="urn:xgw:envelope:1">
      <env:v>XGW-ENV/1</env:v>
      <env:msg_id>…</env:msg_id>
      …  every field, in spec order, text content only
    </env:Envelope>

The signature is over the canonical field bytes, not the XML, so whitespace, prefixes and
namespace declarations may differ between stacks without breaking it (no XML-DSig c14n needed).
Parsing refuses DTDs and entities and never touches the network.
"""

from __future__ import annotations

from lxml import etree

from security.envelope import FIELD_NAMES, Envelope, envelope_from_mapping, malformed

NAMESPACE = "urn:xgw:envelope:1"
_ROOT = f"{{{NAMESPACE}}}Envelope"
_FIELD_PREFIX = f"{{{NAMESPACE}}}"
MAX_XML_BYTES = 64 * 1024 * 1024


def safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        dtd_validation=False,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def to_element(envelope: Envelope) -> etree._Element:
    root = etree.Element(_ROOT, nsmap={"env": NAMESPACE})
    for name in FIELD_NAMES:
        etree.SubElement(root, f"{{{NAMESPACE}}}{name}").text = getattr(envelope, name)
    return root


def to_xml(envelope: Envelope) -> bytes:
    return bytes(etree.tostring(to_element(envelope), xml_declaration=True, encoding="UTF-8"))


def from_element(root: etree._Element) -> Envelope:
    if root.tag != _ROOT:
        raise malformed("expected an env:Envelope element")
    values: dict[str, object] = {}
    for child in root:
        tag = child.tag  # lxml makes a new string at each access
        if not isinstance(tag, str) or not tag.startswith(_FIELD_PREFIX):
            raise malformed("unexpected element in the envelope")
        name = tag[len(_FIELD_PREFIX) :]
        if name in values or len(child):
            raise malformed(f"field {name} repeated or not plain text")
        values[name] = child.text or ""
    return envelope_from_mapping(values)


def from_xml(raw: bytes) -> Envelope:
    if len(raw) > MAX_XML_BYTES:
        raise malformed("envelope too large")
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise malformed("DTDs and entities are not accepted")
    try:
        root = etree.fromstring(raw, safe_parser())
    except etree.XMLSyntaxError:
        raise malformed("not well-formed XML") from None
    return from_element(root)
