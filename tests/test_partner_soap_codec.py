"""The SOAP requests to a partner and the reading of its replies, without zeep per message
where zeep agrees, and with zeep wherever it has to decide (adapters/partner_soap.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from lxml import etree

from adapters import soap11
from adapters.delivery_errors import DeliveryError
from adapters.partner_soap import PACKAGED_WSDL, PartnerMessages, load_messages
from security import envelope as env
from security.envelope_xml import safe_parser
from tests.security_helpers import TO_XZ_PARTY, Pair

REPLY_TAG = "{urn:xgw:partner:1}SubmitResponse"


@pytest.fixture(scope="module")
def messages() -> PartnerMessages:
    return load_messages()


@pytest.fixture(scope="module")
def sealed() -> env.Envelope:
    return Pair().xy_sealer.seal(
        b'{"x": 1}' * 50, receiver=TO_XZ_PARTY, kind="result", matter="M", idem_key="k-1"
    )


def canonical(document: bytes) -> bytes:
    return bytes(etree.tostring(etree.fromstring(document, safe_parser()), method="c14n"))


def outcome(read: object, *args: object) -> object:
    """What reading a reply gives: the envelope, or the refusal's code and whether it retries."""
    try:
        return read(*args)  # type: ignore[operator]
    except DeliveryError as refused:
        return (refused.code, refused.transient)


def test_the_packaged_wsdl_gets_a_codec_that_zeep_agrees_with(
    messages: PartnerMessages, sealed: env.Envelope
) -> None:
    assert messages.codec is not None
    assert messages.codec.reply_tag == REPLY_TAG
    built = messages.build(sealed)
    assert canonical(built) == canonical(messages.build_with_zeep(sealed))
    reply = soap11.envelope_response(REPLY_TAG, sealed)
    assert messages.codec.parse(reply) == sealed
    assert messages.parse_with_zeep(200, reply, "text/xml") == sealed


def test_a_value_that_needs_escaping_is_built_by_zeep(
    messages: PartnerMessages, sealed: env.Envelope
) -> None:
    """Envelope patterns never allow it, but an envelope read back from storage is not
    re-validated: the template must not put raw markup into the document."""
    odd = dataclasses.replace(sealed, matter="a&b<c>")
    assert messages.codec is not None and messages.codec.build(odd) is None
    built = messages.build(odd)
    assert built == messages.build_with_zeep(odd)
    matter = etree.fromstring(built, safe_parser()).find(".//{urn:xgw:envelope:1}matter")
    assert matter is not None and matter.text == "a&b<c>"


def _reply(sealed: env.Envelope, inner: bytes | None = None, head: bytes = b"") -> bytes:
    inner = inner if inner is not None else _envelope_xml(sealed)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>' + head + b"<s:Envelope "
        b'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>' + inner + b"</s:Body>"
        b"</s:Envelope>"
    )


def _envelope_xml(
    sealed: env.Envelope, extra: bytes = b"", wrapper: bytes = b"SubmitResponse"
) -> bytes:
    fields = b"".join(
        b"<e:%s>%s</e:%s>" % (name.encode(), getattr(sealed, name).encode(), name.encode())
        for name in env.FIELD_NAMES
    )
    return (
        b'<p:%s xmlns:p="urn:xgw:partner:1"><e:Envelope xmlns:e="urn:xgw:envelope:1">%s</e:Envelope>'
        b"%s</p:%s>" % (wrapper, fields, extra, wrapper)
    )


FAULT = (
    b"<s:Fault><faultcode>s:Server</faultcode><faultstring>no</faultstring><detail><d:ErrorDetail "
    b'xmlns:d="urn:xgw:partner:1"><d:code>MATTER_NOT_ALLOWED</d:code></d:ErrorDetail></detail>'
    b"</s:Fault>"
)


@pytest.mark.parametrize(
    ("name", "status", "content_type", "shape", "fast"),
    [
        ("plain, other prefixes", 200, "text/xml; charset=utf-8", "plain", True),
        ("pretty-printed, with a Header", 200, "text/xml", "pretty", True),
        ("a Fault", 500, "text/xml", "fault", False),
        ("a Fault with 200", 200, "text/xml", "fault", False),
        ("another element beside the envelope", 200, "text/xml", "extra", False),
        ("another operation's element", 200, "text/xml", "wrapper", False),
        ("a DOCTYPE", 200, "text/xml", "doctype", False),
        ("not XML", 200, "text/xml", "garbage", False),
        ("a field missing", 200, "text/xml", "missing", False),
        ("the right body with status 202", 202, "text/xml", "plain", True),
        ("the right body as multipart", 200, "multipart/related; boundary=x", "plain", True),
    ],
)
def test_a_reply_reads_as_zeep_reads_it(
    messages: PartnerMessages,
    sealed: env.Envelope,
    name: str,
    status: int,
    content_type: str,
    shape: str,
    fast: bool,
) -> None:
    """The codec takes only the plain shape; everything else zeep decides, so a partner's
    reply has one meaning whichever path reads it."""
    body = {
        "plain": _reply(sealed),
        "pretty": _reply(
            sealed,
            b"\n  " + _envelope_xml(sealed).replace(b"><e:", b">\n    <e:") + b"\n",
        ).replace(b"<s:Body>", b"<s:Header/>\n<s:Body>"),
        "fault": _reply(sealed, FAULT),
        "extra": _reply(sealed, _envelope_xml(sealed, extra=b"<p:note>hi</p:note>")),
        "wrapper": _reply(sealed, _envelope_xml(sealed, wrapper=b"SubmitRequest")),
        "doctype": _reply(sealed, head=b'<!DOCTYPE s:Envelope [<!ENTITY x "y">]>'),
        "garbage": b"<s:Envelope",
        "missing": _reply(sealed).replace(b"<e:tag>" + sealed.tag.encode() + b"</e:tag>", b""),
    }[shape]
    assert messages.codec is not None
    taken = messages.codec.parse(body) is not None
    assert taken is fast, name
    read = outcome(messages.parse, status, body, content_type)
    assert read == outcome(messages.parse_with_zeep, status, body, content_type), name
    if fast and status == 200 and content_type.startswith("text/xml"):
        assert read == sealed
    else:  # refused by zeep, except another operation's element, which zeep takes
        assert read == {
            "fault": ("MATTER_NOT_ALLOWED", False),
            "wrapper": sealed,
            "plain": ("HTTP_202", False) if status == 202 else ("REPLY_MALFORMED", True),
        }.get(shape, ("REPLY_MALFORMED", True)), name


def test_a_wsdl_of_another_shape_is_built_and_read_by_zeep(
    tmp_path: Path, sealed: env.Envelope
) -> None:
    """A partner whose WSDL orders the envelope's fields otherwise (msg_id before v): zeep's
    rendering does not fit the XGW-ENV/1 template, so zeep builds and reads every message."""
    v = '<xs:element name="v" type="xs:string"/>'
    msg_id = '<xs:element name="msg_id" type="xs:string"/>'
    wsdl = tmp_path / "reordered.wsdl"
    text = PACKAGED_WSDL.read_text()
    assert v in text and msg_id in text
    wsdl.write_text(text.replace(v, "@v@").replace(msg_id, v).replace("@v@", msg_id))
    other = load_messages(wsdl)
    assert other.codec is None
    built = etree.fromstring(other.build(sealed), safe_parser())
    fields = built.find(".//{urn:xgw:envelope:1}Envelope")
    assert fields is not None
    assert [etree.QName(child).localname for child in fields][:2] == ["msg_id", "v"]
    theirs = _reply(sealed).replace(b"<e:v>XGW-ENV/1</e:v>", b"")
    theirs = theirs.replace(b"<e:msg_id>", b"<e:msg_id>", 1)
    cut = theirs.index(b"</e:msg_id>") + len(b"</e:msg_id>")
    theirs = theirs[:cut] + b"<e:v>XGW-ENV/1</e:v>" + theirs[cut:]
    assert other.parse(200, theirs, "text/xml") == sealed


OTHER_STACK_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    "<soap:Fault><faultcode>{faultcode}</faultcode><faultstring>{text}</faultstring>"
    "{detail}</soap:Fault></soap:Body></soap:Envelope>"
)


@pytest.mark.parametrize(
    ("faultcode", "detail", "code", "transient", "reached"),
    [
        # node-soap and others: ErrorDetail unqualified; the code still counts
        (
            "soap:Client",
            "<detail><ErrorDetail><code>RATE_LIMITED</code></ErrorDetail></detail>",
            "RATE_LIMITED",
            True,
            False,
        ),
        (
            "soap:Client",
            '<detail><e:ErrorDetail xmlns:e="urn:other"><e:code>MATTER_NOT_ALLOWED'
            "</e:code></e:ErrorDetail></detail>",
            "MATTER_NOT_ALLOWED",
            False,
            False,
        ),
        # CXF, .NET, node-soap on an unexpected exception: no code; retried, may have acted
        ("soap:Server", "", "SOAP_FAULT", True, True),
        (
            "soap:Server",
            "<detail><stackTrace>java.lang.NullPointerException</stackTrace></detail>",
            "SOAP_FAULT",
            True,
            True,
        ),
    ],
    ids=["unqualified", "other-namespace", "server-no-detail", "server-stack-trace"],
)
def test_faults_from_other_stacks_are_read_by_local_name_and_a_codeless_one_is_retried(
    messages: PartnerMessages,
    faultcode: str,
    detail: str,
    code: str,
    transient: bool,
    reached: bool,
) -> None:
    from adapters.delivery_errors import DeliveryError

    body = OTHER_STACK_FAULT.format(faultcode=faultcode, text="refused", detail=detail).encode()
    with pytest.raises(DeliveryError) as failed:
        messages.parse(500, body, "text/xml; charset=utf-8")
    assert (failed.value.code, failed.value.transient, failed.value.reached) == (
        code,
        transient,
        reached,
    )
