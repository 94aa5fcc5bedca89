"""roost.xmpp.element: building, reading, copying, comparing and serializing elements."""

from __future__ import annotations

import pytest

from roost.xmpp import ns
from roost.xmpp.element import Element, escape_attr, escape_text
from roost.xmpp.parser import parse_element

# -- escaping ----------------------------------------------------------------------------------


def test_escape_text_escapes_markup_characters() -> None:
    assert escape_text("a & b < c > d") == "a &amp; b &lt; c &gt; d"


def test_escape_text_escapes_ampersand_first_so_references_are_not_double_read() -> None:
    assert escape_text("&lt;") == "&amp;lt;"


def test_escape_text_leaves_quotes_newlines_and_tabs_alone() -> None:
    assert escape_text("'\"\n\t") == "'\"\n\t"


def test_escape_text_writes_carriage_return_as_a_reference() -> None:
    # A literal CR would be read back as LF (XML end-of-line handling).
    assert escape_text("a\r\nb\r") == "a&#13;\nb&#13;"


def test_escape_text_returns_plain_text_unchanged() -> None:
    assert escape_text("h\u00e9llo \U0001f600") == "h\u00e9llo \U0001f600"


def test_escape_attr_escapes_both_quotes_and_markup() -> None:
    assert escape_attr('<a href="x">it\'s & </a>') == (
        "&lt;a href=&quot;x&quot;&gt;it&apos;s &amp; &lt;/a&gt;"
    )


def test_escape_attr_writes_whitespace_other_than_space_as_references() -> None:
    assert escape_attr("a\nb\rc\td e") == "a&#10;b&#13;c&#9;d e"


def test_escape_attr_escapes_ampersand_first() -> None:
    assert escape_attr("&amp;&#10;") == "&amp;amp;&amp;#10;"


# -- serialization -----------------------------------------------------------------------------


def test_element_without_children_serializes_as_an_empty_element_tag() -> None:
    assert Element("presence").to_str() == "<presence/>"


def test_element_in_the_parent_namespace_gets_no_declaration() -> None:
    message = Element("message", ns.CLIENT, {"to": "a@b"})
    message.add_text("body", "hi")
    assert message.to_str() == "<message to='a@b'><body>hi</body></message>"


def test_namespace_is_declared_only_where_it_changes() -> None:
    iq = Element("iq", ns.CLIENT, {"type": "result"})
    query = iq.add("query", ns.ROSTER)
    item = query.add("item", attrs={"jid": "a@b"})
    item.add_text("group", "Friends")
    query.add("back", ns.CLIENT)
    assert iq.to_str() == (
        "<iq type='result'><query xmlns='jabber:iq:roster'><item jid='a@b'>"
        "<group>Friends</group></item><back xmlns='jabber:client'/></query></iq>"
    )


def test_top_level_namespace_is_declared_against_the_given_parent_namespace() -> None:
    element = Element("x", "urn:x")
    assert element.to_str() == "<x xmlns='urn:x'/>"
    assert element.to_str("urn:x") == "<x/>"
    assert Element("message").to_str(ns.SERVER) == "<message xmlns='jabber:client'/>"


def test_empty_namespace_is_declared_as_xmlns_empty() -> None:
    assert Element("x", "").to_str() == "<x xmlns=''/>"


def test_namespace_uri_is_escaped_in_its_declaration() -> None:
    assert Element("x", "urn:a&b'c").to_str() == "<x xmlns='urn:a&amp;b&apos;c'/>"


def test_text_and_attribute_values_are_escaped_when_serialized() -> None:
    element = Element("body", ns.CLIENT, {"a": "<'\"&>\n"}, ["<script>&amp;</script>"])
    assert element.to_str() == (
        "<body a='&lt;&apos;&quot;&amp;&gt;&#10;'>&lt;script&gt;&amp;amp;&lt;/script&gt;</body>"
    )


def test_clark_notation_attributes_get_generated_prefixes_per_namespace() -> None:
    element = Element("x", "urn:x", {"{urn:a}one": "1", "{urn:b}two": "2", "{urn:a}three": "3"})
    assert element.to_str() == (
        "<x xmlns='urn:x' xmlns:ns0='urn:a' ns0:one='1' xmlns:ns1='urn:b' ns1:two='2'"
        " ns0:three='3'/>"
    )
    assert parse_element(element.to_bytes()) == element


def test_xml_lang_is_serialized_without_a_declaration_and_parses_back() -> None:
    element = Element("message", ns.CLIENT, {"xml:lang": "en"}, ["hello"])
    assert element.to_str() == "<message xml:lang='en'>hello</message>"
    assert parse_element(element.to_str())["xml:lang"] == "en"


def test_empty_text_child_serializes_as_start_and_end_tags() -> None:
    assert Element("body", ns.CLIENT, {}, [""]).to_str() == "<body></body>"


def test_to_bytes_is_utf8_of_to_str_and_str_is_to_str() -> None:
    element = Element("body", ns.CLIENT, {}, ["\u00e9\U0001f600"])
    assert element.to_bytes() == element.to_str().encode("utf-8")
    assert str(element) == element.to_str()


def test_repr_names_the_element_and_truncates_long_ones() -> None:
    assert repr(Element("x", "urn:x")) == "<Element {urn:x}x <x xmlns='urn:x'/>>"
    long = Element("body", ns.CLIENT, {}, ["y" * 500])
    text = repr(long)
    assert text.startswith("<Element {jabber:client}body <body>yyy")
    assert text.endswith("...>")
    assert len(text) < 260


# -- reading -------------------------------------------------------------------------------------


def _message() -> Element:
    message = Element("message", ns.CLIENT, {"to": "a@b", "type": "chat"})
    message.append("lead ")
    message.add_text("body", "one")
    message.add("x", "urn:x").add_text("body", "inner")
    message.add_text("body", "two", "urn:other")
    message.append("tail")
    return message


def test_attribute_access_helpers() -> None:
    message = _message()
    assert message["to"] == "a@b"
    assert message.get("type") == "chat"
    assert message.get("id") is None
    assert message.get("id", "fallback") == "fallback"
    assert "to" in message
    assert "id" not in message
    message["id"] = "m1"
    assert message.attrs["id"] == "m1"
    with pytest.raises(KeyError):
        message["missing"]


def test_text_concatenates_only_the_direct_text_children() -> None:
    assert _message().text == "lead tail"
    assert Element("x").text == ""
    assert Element("x", ns.CLIENT, {}, ["only"]).text == "only"
    assert Element("x", ns.CLIENT, {}, [Element("y", ns.CLIENT, {}, ["deep"])]).text == ""


def test_setting_text_replaces_text_and_keeps_child_elements() -> None:
    message = _message()
    message.text = "new"
    assert message.children[0] == "new"
    assert message.text == "new"
    assert [c.name for c in message.elements()] == ["body", "x", "body"]
    message.text = ""
    assert message.text == ""
    assert all(isinstance(c, Element) for c in message.children)


def test_find_returns_the_first_matching_child_optionally_by_namespace() -> None:
    message = _message()
    first = message.find("body")
    assert first is not None
    assert first.text == "one"
    other = message.find("body", "urn:other")
    assert other is not None
    assert other.text == "two"
    assert message.find("body", "urn:none") is None
    assert message.find("missing") is None
    # Only direct children are searched.
    assert message.find("x") is not None
    assert message.find_text("body", "urn:x") is None


def test_find_text_returns_the_childs_text_or_none() -> None:
    message = _message()
    assert message.find_text("body") == "one"
    assert message.find_text("body", "urn:other") == "two"
    assert message.find_text("missing") is None
    message.add("empty")
    assert message.find_text("empty") == ""


def test_elements_filters_by_name_and_namespace() -> None:
    message = _message()
    assert [e.name for e in message.elements()] == ["body", "x", "body"]
    assert [e.text for e in message.elements("body")] == ["one", "two"]
    assert [e.text for e in message.elements("body", ns.CLIENT)] == ["one"]
    assert [e.name for e in message.elements(xmlns="urn:x")] == ["x"]
    assert list(message.elements("nothing")) == []


def test_first_child_skips_text() -> None:
    message = _message()
    first = message.first_child()
    assert first is not None
    assert first.name == "body"
    assert Element("x", ns.CLIENT, {}, ["text"]).first_child() is None


# -- building ----------------------------------------------------------------------------------


def test_add_creates_a_child_in_the_parent_namespace_unless_told_otherwise() -> None:
    parent = Element("iq", ns.CLIENT)
    inherited = parent.add("query", attrs={"node": "n"})
    explicit = parent.add("ping", ns.PING)
    assert (inherited.xmlns, inherited.attrs) == (ns.CLIENT, {"node": "n"})
    assert explicit.xmlns == ns.PING
    assert parent.children == [inherited, explicit]


def test_add_text_adds_text_only_when_not_empty() -> None:
    parent = Element("x", "urn:x")
    with_text = parent.add_text("a", "hello")
    without = parent.add_text("b", "")
    other = parent.add_text("c", "t", "urn:c")
    assert with_text.children == ["hello"]
    assert without.children == []
    assert (other.xmlns, other.children) == ("urn:c", ["t"])
    assert with_text.xmlns == "urn:x"


def test_append_returns_what_it_appended_and_remove_takes_it_out() -> None:
    parent = Element("x")
    child = Element("y")
    assert parent.append(child) is child
    assert parent.append("text") == "text"
    parent.remove(child)
    assert parent.children == ["text"]
    with pytest.raises(ValueError):
        parent.remove(child)


def test_constructor_does_not_share_default_containers() -> None:
    a, b = Element("a"), Element("b")
    a["k"] = "v"
    a.append("t")
    assert b.attrs == {}
    assert b.children == []


# -- copies ------------------------------------------------------------------------------------


def test_copy_is_deep_and_independent() -> None:
    original = _message()
    copy = original.copy()
    assert copy == original
    copy["to"] = "c@d"
    inner = copy.find("x")
    assert inner is not None
    inner["changed"] = "yes"
    inner.add("new")
    copy.append("more")
    assert original["to"] == "a@b"
    original_inner = original.find("x")
    assert original_inner is not None
    assert "changed" not in original_inner
    assert original_inner.find("new") is None
    assert original.text == "lead tail"


def test_shallow_copy_has_its_own_attributes_and_child_list_but_shares_children() -> None:
    original = _message()
    copy = original.shallow_copy()
    assert copy == original
    copy["to"] = "c@d"
    copy.append(Element("extra"))
    assert original["to"] == "a@b"
    assert original.find("extra") is None
    shared = copy.find("x")
    assert shared is original.find("x")
    assert shared is not None
    shared["changed"] = "yes"
    original_inner = original.find("x")
    assert original_inner is not None
    assert original_inner["changed"] == "yes"


# -- equality --------------------------------------------------------------------------------------


def test_equality_ignores_how_text_is_split_and_empty_text() -> None:
    a = Element("body", ns.CLIENT, {}, ["hel", "", "lo", Element("b"), "x", "y"])
    b = Element("body", ns.CLIENT, {}, ["hello", Element("b"), "xy", ""])
    assert a == b


def test_equality_compares_name_namespace_attributes_and_children() -> None:
    base = Element("x", "urn:x", {"a": "1"}, ["t", Element("y")])
    assert base == Element("x", "urn:x", {"a": "1"}, ["t", Element("y")])
    assert base != Element("z", "urn:x", {"a": "1"}, ["t", Element("y")])
    assert base != Element("x", "urn:other", {"a": "1"}, ["t", Element("y")])
    assert base != Element("x", "urn:x", {"a": "2"}, ["t", Element("y")])
    assert base != Element("x", "urn:x", {"a": "1"}, [Element("y"), "t"])
    assert base != Element("x", "urn:x", {"a": "1"}, ["t", Element("y", "urn:y")])
    assert base != Element("x", "urn:x", {"a": "1"}, ["t "])


def test_element_is_never_equal_to_other_types_and_is_unhashable() -> None:
    element = Element("x")
    assert element != "<x/>"
    assert element.__eq__("<x/>") is NotImplemented
    with pytest.raises(TypeError):
        hash(element)
