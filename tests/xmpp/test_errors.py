"""roost.xmpp.errors: stanza error replies and stream error bytes (RFC 6120 §4.9, §8.3)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roost.xmpp import errors, ns
from roost.xmpp.element import Element
from roost.xmpp.errors import (
    STANZA_CONDITIONS,
    STREAM_CONDITIONS,
    StanzaError,
    StreamError,
    XMPPError,
)
from roost.xmpp.parser import StreamClose, StreamOpen, XMLStreamParser


def _message() -> Element:
    message = Element(
        "message",
        ns.CLIENT,
        {
            "from": "romeo@example.net/orchard",
            "to": "juliet@example.com",
            "id": "m1",
            "type": "chat",
        },
    )
    message.add_text("body", "Wherefore art thou?")
    return message


def _iq() -> Element:
    iq = Element("iq", ns.CLIENT, {"from": "a@b/c", "to": "example.com", "id": "q1", "type": "get"})
    iq.add("query", ns.DISCO_INFO).add("big", ns.DISCO_INFO)
    return iq


def _error_child(reply: Element) -> Element:
    error = reply.find("error", ns.CLIENT)
    assert error is not None
    return error


def test_reply_swaps_to_and_from_and_sets_type_error() -> None:
    reply = errors.service_unavailable().reply_to(_message())
    assert reply["to"] == "romeo@example.net/orchard"
    assert reply["from"] == "juliet@example.com"
    assert reply["type"] == "error"
    assert reply["id"] == "m1"
    assert (reply.name, reply.xmlns) == ("message", ns.CLIENT)


def test_reply_carries_the_condition_in_the_stanzas_namespace_with_its_default_type() -> None:
    reply = errors.item_not_found().reply_to(_iq())
    error = _error_child(reply)
    assert error.attrs == {"type": "cancel"}
    condition = error.first_child()
    assert condition == Element("item-not-found", ns.STANZAS)


def test_iq_error_reply_drops_the_request_payload() -> None:
    reply = errors.feature_not_implemented().reply_to(_iq())
    assert [c.name for c in reply.elements()] == ["error"]


@pytest.mark.parametrize("name", ["message", "presence"])
def test_message_and_presence_error_replies_keep_the_payload_before_the_error(name: str) -> None:
    stanza = _message()
    stanza.name = name
    reply = errors.not_acceptable().reply_to(stanza)
    assert [c.name for c in reply.elements()] == ["body", "error"]
    assert reply.find_text("body") == "Wherefore art thou?"


def test_reply_does_not_modify_the_original_stanza() -> None:
    stanza = _message()
    before = stanza.copy()
    errors.forbidden("no").reply_to(stanza)
    assert stanza == before
    assert len(stanza.children) == 1


def test_reply_to_a_stanza_without_addresses_adds_none() -> None:
    reply = errors.bad_request().reply_to(Element("iq", ns.CLIENT, {"type": "set", "id": "x"}))
    assert reply.attrs == {"type": "error", "id": "x"}


def test_reply_to_a_stanza_with_only_from_addresses_it_back() -> None:
    reply = errors.bad_request().reply_to(Element("presence", ns.CLIENT, {"from": "a@b/c"}))
    assert reply.attrs == {"type": "error", "to": "a@b/c"}


@pytest.mark.parametrize(("condition", "error_type"), sorted(STANZA_CONDITIONS.items()))
def test_every_stanza_condition_has_its_rfc6120_default_type(
    condition: str, error_type: str
) -> None:
    error = StanzaError(condition).to_element()
    assert error.attrs["type"] == error_type
    assert error.find(condition, ns.STANZAS) is not None


@pytest.mark.parametrize(
    ("condition", "error_type"),
    [
        ("bad-request", "modify"),
        ("forbidden", "auth"),
        ("item-not-found", "cancel"),
        ("recipient-unavailable", "wait"),
        ("not-authorized", "auth"),
        ("service-unavailable", "cancel"),
        ("resource-constraint", "wait"),
        ("jid-malformed", "modify"),
    ],
)
def test_default_types_match_rfc6120(condition: str, error_type: str) -> None:
    assert StanzaError(condition).error_type == error_type


def test_error_type_can_be_overridden() -> None:
    error = StanzaError("service-unavailable", error_type="wait").to_element()
    assert error["type"] == "wait"


def test_error_element_carries_text_by_and_extra_payload_in_order() -> None:
    extra = Element("too-many", "urn:example:errors")
    error = StanzaError("policy-violation", "slow down <please>", extra=extra).to_element(
        by="example.com"
    )
    assert error.attrs == {"type": "modify", "by": "example.com"}
    assert error.children == [
        Element("policy-violation", ns.STANZAS),
        Element("text", ns.STANZAS, {"xml:lang": "en"}, ["slow down <please>"]),
        extra,
    ]
    assert error.to_str() == (
        "<error type='modify' by='example.com'>"
        "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>"
        "slow down &lt;please&gt;</text>"
        "<too-many xmlns='urn:example:errors'/></error>"
    )


def test_reply_passes_by_to_the_error_element() -> None:
    reply = errors.not_allowed().reply_to(_message(), by="example.com")
    assert _error_child(reply)["by"] == "example.com"


def test_error_without_text_has_no_text_element() -> None:
    assert StanzaError("conflict").to_element().find("text", ns.STANZAS) is None


def test_unknown_stanza_condition_raises_value_error() -> None:
    with pytest.raises(ValueError, match="made-up"):
        StanzaError("made-up")


def test_unknown_stream_condition_raises_value_error() -> None:
    with pytest.raises(ValueError, match="made-up"):
        StreamError("made-up")
    # A stanza-only condition is not a stream condition.
    with pytest.raises(ValueError, match="item-not-found"):
        StreamError("item-not-found")


BUILDERS: list[tuple[Callable[[str | None], StanzaError], str]] = [
    (errors.bad_request, "bad-request"),
    (errors.conflict, "conflict"),
    (errors.feature_not_implemented, "feature-not-implemented"),
    (errors.forbidden, "forbidden"),
    (errors.internal_server_error, "internal-server-error"),
    (errors.item_not_found, "item-not-found"),
    (errors.jid_malformed, "jid-malformed"),
    (errors.not_acceptable, "not-acceptable"),
    (errors.not_allowed, "not-allowed"),
    (errors.not_authorized, "not-authorized"),
    (errors.policy_violation, "policy-violation"),
    (errors.remote_server_not_found, "remote-server-not-found"),
    (errors.resource_constraint, "resource-constraint"),
    (errors.service_unavailable, "service-unavailable"),
    (errors.unexpected_request, "unexpected-request"),
]


@pytest.mark.parametrize(("builder", "condition"), BUILDERS)
def test_builders_make_the_condition_they_are_named_after(
    builder: Callable[[str | None], StanzaError], condition: str
) -> None:
    error = builder("why")
    assert isinstance(error, StanzaError)
    assert isinstance(error, XMPPError)
    assert (error.condition, error.text) == (condition, "why")
    assert str(error) == f"{condition}: why"


def test_errors_can_be_raised_and_caught_as_xmpp_errors() -> None:
    with pytest.raises(XMPPError) as info:
        raise errors.forbidden()
    assert info.value.condition == "forbidden"
    assert info.value.text is None
    assert str(info.value) == "forbidden"


def test_every_rfc6120_stream_condition_is_known() -> None:
    for condition in ["not-well-formed", "policy-violation", "restricted-xml", "see-other-host"]:
        assert condition in STREAM_CONDITIONS
    assert len(STREAM_CONDITIONS) == 25
    assert len(STANZA_CONDITIONS) == 22


def test_stream_error_bytes_use_the_stream_prefix() -> None:
    assert StreamError("not-well-formed").to_bytes() == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"</stream:error>"
    )


def test_stream_error_bytes_carry_escaped_text() -> None:
    assert StreamError("policy-violation", "stanza > 10 & more").to_bytes() == (
        b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>"
        b"stanza &gt; 10 &amp; more</text></stream:error>"
    )


def test_stream_error_bytes_parse_to_its_element_inside_a_client_stream() -> None:
    error = StreamError("host-unknown", "who is \u00e9?")
    parser = XMLStreamParser()
    events = parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        + error.to_bytes()
        + b"</stream:stream>"
    )
    assert isinstance(events[0], StreamOpen)
    assert events[1:] == [error.to_element(), StreamClose()]
    assert error.to_element().xmlns == ns.STREAM
