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

import re

from lxml import etree

from security.envelope import Envelope, envelope_from_mapping, malformed

NAMESPACE = "urn:xgw:envelope:1"
_ROOT = f"{{{NAMESPACE}}}Envelope"
_FIELD_PREFIX = f"{{{NAMESPACE}}}"
MAX_XML_BYTES = 64 * 1024 * 1024


class XmlRefused(ValueError):
    """An XML document refused before or while parsing, with its stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


MAX_DEPTH = 32
# Any node MAX_DEPTH + 1 levels below the root, found by libxml2 in one pass over the tree.
_TOO_DEEP = etree.XPath(f"boolean(/*{'/*' * (MAX_DEPTH + 1)})")
_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_DTD = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_untrusted(raw: bytes) -> etree._Element:
    """The root of an XML document from outside, or XmlRefused.

    UTF-8 only, decided up front (a UTF-16 or UTF-32 document, by its byte order mark, its NUL
    bytes or its declaration, is ``XML_ENCODING_UNSUPPORTED``): then a DTD can only appear as
    the bytes ``<!DOCTYPE``/``<!ENTITY``, refused as ``XML_DTD_FORBIDDEN`` before parsing, and
    again if the parser saw one. No entity is resolved, nothing fetched; more than
    ``MAX_DEPTH`` levels of nesting is ``XML_TOO_DEEP``, whether libxml2 or we count them.
    """
    head = raw[:4]
    if head.startswith((b"\xfe\xff", b"\xff\xfe", b"\x00\x00\xfe\xff")) or b"\x00" in raw:
        raise XmlRefused("XML_ENCODING_UNSUPPORTED", "XML documents here are UTF-8")
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    declared = _DECLARED_ENCODING.match(body.lstrip())
    if declared is not None and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        raise XmlRefused("XML_ENCODING_UNSUPPORTED", "XML documents here are UTF-8")
    if _DTD.search(body):
        raise XmlRefused("XML_DTD_FORBIDDEN", "DTDs and entity declarations are not accepted")
    try:
        root = etree.fromstring(raw, safe_parser())
    except etree.XMLSyntaxError as exc:
        if "depth" in str(exc).lower():  # libxml2's own limit (256) without huge_tree
            raise XmlRefused("XML_TOO_DEEP", f"nesting deeper than {MAX_DEPTH} levels") from None
        raise XmlRefused("XML_MALFORMED", "the document is not well-formed XML (UTF-8)") from None
    except ValueError:
        raise XmlRefused("XML_MALFORMED", "the document is not well-formed XML (UTF-8)") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlRefused("XML_DTD_FORBIDDEN", "DTDs and entity declarations are not accepted")
    if _TOO_DEEP(root):
        raise XmlRefused("XML_TOO_DEEP", f"nesting deeper than {MAX_DEPTH} levels")
    return root


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
    for name in envelope.field_names:
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
    try:
        root = parse_untrusted(raw)
    except XmlRefused as exc:
        raise malformed(exc.message) from None
    return from_element(root)
