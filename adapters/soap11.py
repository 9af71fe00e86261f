"""SOAP 1.1 safely with lxml, both sides: parse hostile bytes (a partner's request to us, or its
reply to ours), answer with a body or a Fault.

Reads documents with ``security.envelope_xml.parse_untrusted`` (UTF-8 only, no DTD, no entity
resolution, no network, bounded depth), so no external resource is ever fetched and a
billion-laughs document costs nothing; then holds the document to SOAP 1.1: an optional Header
whose entries we must understand when they say ``mustUnderstand="1"`` (we understand none), and
one Body with one element.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from security import envelope as env
from security import envelope_xml
from security.envelope_xml import XmlRefused, parse_untrusted

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
_HEADER, _BODY = f"{{{SOAP11}}}Header", f"{{{SOAP11}}}Body"
_MUST_UNDERSTAND = f"{{{SOAP11}}}mustUnderstand"


@dataclass
class SoapError(Exception):
    code: str
    message: str
    faultcode: str = "soap:Client"
    status: int = 500  # SOAP 1.1 sends faults with HTTP 500


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, without parameters, in lower case."""
    return content_type.split(";")[0].strip().lower()


def parse_document(raw: bytes) -> etree._Element:
    """The one element in the Body of a SOAP 1.1 document (request or reply), or SoapError."""
    try:
        root = parse_untrusted(raw)
    except XmlRefused as exc:
        raise SoapError(exc.code, exc.message) from None
    if root.tag == f"{{{SOAP12}}}Envelope":
        raise SoapError(
            "SOAP_VERSION_MISMATCH",
            "SOAP 1.2 envelope where 1.1 is expected",
            "soap:VersionMismatch",
        )
    if root.tag != f"{{{SOAP11}}}Envelope":
        raise SoapError("SOAP_MALFORMED", "not a SOAP 1.1 envelope")
    parts = [child.tag for child in root]
    if parts not in ([_BODY], [_HEADER, _BODY]):
        raise SoapError("SOAP_MALFORMED", "a SOAP Envelope holds an optional Header, then one Body")
    header = root.find(_HEADER)
    for entry in header if header is not None else ():
        if entry.get(_MUST_UNDERSTAND, "0").strip() in ("1", "true"):  # we understand none
            raise SoapError(
                "SOAP_MUST_UNDERSTAND",
                f"header {etree.QName(entry).localname} is not understood here",
                "soap:MustUnderstand",
            )
    body = root.find(_BODY)
    children = [c for c in body] if body is not None else []
    if len(children) != 1 or not isinstance(children[0].tag, str):
        raise SoapError("SOAP_MALFORMED", "the SOAP Body must hold exactly one element")
    return children[0]


def parse_request(
    raw: bytes, content_type: str, soap_action: str | None, expected_actions: dict[str, str]
) -> tuple[str, etree._Element]:
    """(operation, the Body's element) of a SOAP 1.1 request, or SoapError."""
    if media_type(content_type) == "application/soap+xml":
        raise SoapError(
            "SOAP_VERSION_MISMATCH",
            "SOAP 1.2 is not served here; use SOAP 1.1 (text/xml)",
            "soap:VersionMismatch",
        )
    element = parse_document(raw)
    operation = next((op for op, tag in expected_actions.items() if tag == element.tag), None)
    if operation is None:
        raise SoapError("SOAP_UNKNOWN_OPERATION", "the Body holds no operation this service offers")
    action = (soap_action or "").strip().strip('"')
    if action and not action.endswith("/" + operation):
        raise SoapError("SOAP_ACTION_MISMATCH", f"SOAPAction does not name {operation}")
    return operation, element


def envelope_xml_bytes(body_element: etree._Element) -> bytes:
    root = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11})
    body = etree.SubElement(root, f"{{{SOAP11}}}Body")
    body.append(body_element)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def fault_xml(error: SoapError, detail_ns: str) -> bytes:
    root = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11})
    body = etree.SubElement(root, f"{{{SOAP11}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP11}}}Fault")
    etree.SubElement(fault, "faultcode").text = error.faultcode
    etree.SubElement(fault, "faultstring").text = error.message
    detail = etree.SubElement(fault, "detail")
    info = etree.SubElement(detail, f"{{{detail_ns}}}ErrorDetail", nsmap={"d": detail_ns})
    etree.SubElement(info, f"{{{detail_ns}}}code").text = error.code
    etree.SubElement(info, f"{{{detail_ns}}}message").text = error.message
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def carried_envelope(element: etree._Element) -> env.Envelope:
    """The one env:Envelope an operation's request or response element carries (our WSDLs'
    shape)."""
    inner = element.find(f"{{{envelope_xml.NAMESPACE}}}Envelope")
    if inner is None or len(element) != 1:
        raise SoapError("ENVELOPE_MALFORMED", "the body element must hold exactly one env:Envelope")
    return envelope_xml.from_element(inner)


def envelope_response(response_tag: str, envelope: env.Envelope) -> bytes:
    """A SOAP 1.1 response whose body element carries one sealed envelope."""
    namespace = response_tag[1:].split("}", 1)[0]
    response = etree.Element(response_tag, nsmap={"r": namespace})
    response.append(envelope_xml.to_element(envelope))
    return envelope_xml_bytes(response)


def fault_for(code: str, message: str, detail_ns: str) -> bytes:
    """A refusal with its stable code, as a SOAP Fault."""
    return fault_xml(SoapError(code, message), detail_ns)


# -- materials over SOAP: MTOM/XOP (XGW-ENV/2, docs/envelope.md §11) -------------------------

XOP = "http://www.w3.org/2004/08/xop/include"
ROOT_CONTENT_ID = "root.message@xgw"


def material_content_id(index: int, code: str) -> str:
    """A material's attachment Content-ID (RFC 2392 ``cid:`` without the brackets)."""
    return f"{index}.{code}@material.xgw"


def request_with_materials(
    request_tag: str, material_tag: str, envelope: env.Envelope
) -> tuple[bytes, list[str]]:
    """A SOAP 1.1 request whose body element carries the envelope, then one ``Material``
    element per manifest entry holding an ``xop:Include`` of its attachment: (the root part's
    XML, each material's Content-ID in the manifest's order)."""
    namespace = request_tag[1:].split("}", 1)[0]
    element = etree.Element(request_tag, nsmap={"r": namespace, "xop": XOP})
    element.append(envelope_xml.to_element(envelope))
    cids = []
    for index, entry in enumerate(envelope.manifest):
        material = etree.SubElement(element, material_tag)
        material.set("code", entry.code)
        cid = material_content_id(index, entry.code)
        etree.SubElement(material, f"{{{XOP}}}Include").set("href", f"cid:{cid}")
        cids.append(cid)
    return envelope_xml_bytes(element), cids


def carried_with_materials(
    element: etree._Element, material_tag: str
) -> tuple[env.Envelope, list[tuple[str, str]]]:
    """The env:Envelope an operation's request carries and, after it, the (code, Content-ID)
    of each ``Material`` it includes by XOP, in order — the manifest's materials, in its order;
    SoapError for any other shape."""
    children = list(element)
    if not children or children[0].tag != f"{{{envelope_xml.NAMESPACE}}}Envelope":
        raise SoapError("ENVELOPE_MALFORMED", "the body element must start with one env:Envelope")
    envelope = envelope_xml.from_element(children[0])
    included: list[tuple[str, str]] = []
    for material in children[1:]:
        include = list(material)
        href = include[0].get("href", "") if len(include) == 1 else ""
        if (
            material.tag != material_tag
            or len(include) != 1
            or include[0].tag != f"{{{XOP}}}Include"
            or (material.text or "").strip()
            or not href.startswith("cid:")
        ):
            raise SoapError(
                "ENVELOPE_MALFORMED", "after the envelope, only Material elements with xop:Include"
            )
        included.append((material.get("code", ""), href.removeprefix("cid:")))
    if [code for code, _ in included] != [entry.code for entry in envelope.manifest]:
        raise SoapError("MATERIAL_UNEXPECTED", "the Material elements are not the manifest's")
    return envelope, included
