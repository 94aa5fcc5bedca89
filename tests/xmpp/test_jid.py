"""roost.xmpp.jid: parsing and normalising JIDs (RFC 7622)."""

from __future__ import annotations

import pytest

from roost.xmpp.jid import JID, InvalidJID, nameprep, nodeprep, parse_jid, resourceprep


def test_full_jid_is_split_into_its_three_parts() -> None:
    jid = parse_jid("juliet@example.com/balcony")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.com", "balcony")
    assert str(jid) == "juliet@example.com/balcony"
    assert jid.bare_str == "juliet@example.com"
    assert not jid.is_bare
    assert not jid.is_domain


def test_bare_jid_has_no_resource() -> None:
    jid = parse_jid("juliet@example.com")
    assert (jid.local, jid.domain, jid.resource) == ("juliet", "example.com", None)
    assert jid.is_bare
    assert not jid.is_domain


def test_domain_jid_has_only_a_domain() -> None:
    jid = parse_jid("example.com")
    assert (jid.local, jid.domain, jid.resource) == (None, "example.com", None)
    assert jid.is_bare
    assert jid.is_domain


def test_domain_jid_with_a_resource() -> None:
    jid = parse_jid("a.example.com/b@example.net")
    assert (jid.local, jid.domain, jid.resource) == (None, "a.example.com", "b@example.net")
    assert not jid.is_domain


def test_resource_is_everything_after_the_first_slash() -> None:
    jid = parse_jid("juliet@example.com/foo/bar@baz")
    assert jid.resource == "foo/bar@baz"


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Juliet@Example.COM/Balcony", "juliet@example.com/Balcony"),
        ("ROMEO@EXAMPLE.NET", "romeo@example.net"),
        ("\u03a3@example.com/foo", "\u03c3@example.com/foo"),  # capital sigma, small sigma
        ("\u00c4rger@example.com", "\u00e4rger@example.com"),
        ("\uff2a\uff2f\uff28\uff2e@example.com", "john@example.com"),  # full-width letters
        ("M\u00dcNCHEN.de", "m\u00fcnchen.de"),
        ("example.com.", "example.com"),
        ("user@[2001:DB8::1]/R", "user@[2001:db8::1]/R"),
    ],
)
def test_jids_are_normalised(raw: str, normal: str) -> None:
    assert str(parse_jid(raw)) == normal


def test_resource_case_is_preserved() -> None:
    assert parse_jid("a@example.com/MixedCase").resource == "MixedCase"
    assert parse_jid("a@example.com/MixedCase") != parse_jid("a@example.com/mixedcase")


def test_resource_may_contain_spaces_and_symbols() -> None:
    assert parse_jid("juliet@example.com/foo bar").resource == "foo bar"
    assert parse_jid("juliet@example.com/\u265a").resource == "\u265a"


@pytest.mark.parametrize(
    "local",
    ["fu\u00dfball", "\u03c0", "\u4e2d\u6587", "foo\\20bar", "caf\u00e9"],
)
def test_unicode_and_escaped_localparts_are_valid(local: str) -> None:
    assert parse_jid(f"{local}@example.com").local == local


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("@example.com", id="empty-localpart"),
        pytest.param("@example.com/", id="empty-localpart-and-resourcepart"),
        pytest.param("juliet@", id="empty-domainpart"),
        pytest.param("juliet@/r", id="empty-domainpart-with-resource"),
        pytest.param("/foobar", id="only-a-resource"),
        pytest.param("juliet@example.com/", id="empty-resourcepart"),
        pytest.param(".", id="only-a-dot"),
        pytest.param('"juliet"@example.com', id="quotes-in-localpart"),
        pytest.param("foo bar@example.com", id="space-in-localpart"),
        pytest.param("henry\u2163@example.com", id="compatibility-character-in-localpart"),
        pytest.param("\u265a@example.com", id="symbol-in-localpart"),
        pytest.param("a\x07@example.com", id="control-in-localpart"),
        pytest.param("juliet@example.com/a\x07b", id="control-in-resourcepart"),
        pytest.param("juliet@exa mple.com", id="space-in-domainpart"),
        pytest.param("juliet@exa<mple.com", id="markup-in-domainpart"),
        pytest.param("juliet@example..com", id="empty-label"),
        pytest.param("juliet@.example.com", id="leading-dot"),
        pytest.param("juliet@" + "a" * 64 + ".com", id="label-over-63"),
        pytest.param("juliet@[::g]", id="bad-ipv6-literal"),
        pytest.param("juliet@[1.2.3.4]", id="ipv4-in-brackets"),
        pytest.param("juliet@[::1", id="unclosed-bracket"),
    ],
)
def test_invalid_jids_are_rejected(raw: str) -> None:
    with pytest.raises(InvalidJID):
        parse_jid(raw)


@pytest.mark.parametrize("character", list("\"&':<>@"))
def test_localpart_may_not_contain_rfc7622_forbidden_characters(character: str) -> None:
    with pytest.raises(InvalidJID, match="forbidden"):
        parse_jid(f"a{character}b@example.com")


@pytest.mark.parametrize("character", list("\"&'/:<>@"))
def test_nodeprep_rejects_every_forbidden_character(character: str) -> None:
    with pytest.raises(InvalidJID):
        nodeprep(f"a{character}b")


def test_a_slash_before_the_at_sign_starts_the_resource() -> None:
    # So "/" can never reach a localpart through parse_jid.
    jid = parse_jid("a/b@example.com")
    assert (jid.local, jid.domain, jid.resource) == (None, "a", "b@example.com")


def test_parts_of_1023_bytes_are_accepted_and_1024_rejected() -> None:
    assert parse_jid("a" * 1023 + "@example.com").local == "a" * 1023
    assert parse_jid("a@example.com/" + "r" * 1023).resource == "r" * 1023
    with pytest.raises(InvalidJID, match="1023"):
        parse_jid("a" * 1024 + "@example.com")
    with pytest.raises(InvalidJID, match="1023"):
        parse_jid("a@example.com/" + "r" * 1024)
    domain = ".".join(["d" * 63] * 16)
    assert len(domain) == 1023
    assert parse_jid("a@" + domain).domain == domain
    with pytest.raises(InvalidJID, match="1023"):
        parse_jid("a@e." + domain)


def test_length_limits_count_utf8_bytes_not_characters() -> None:
    local = "\u00e9" * 512  # 1024 bytes
    with pytest.raises(InvalidJID):
        parse_jid(local + "@example.com")
    assert parse_jid("\u00e9" * 511 + "@example.com").local == "\u00e9" * 511


@pytest.mark.parametrize(
    "domain", ["[::1]", "[2001:db8::1]", "[::ffff:192.0.2.1]", "192.0.2.1", "localhost"]
)
def test_ip_literals_and_simple_hostnames_are_valid_domains(domain: str) -> None:
    assert parse_jid(f"user@{domain}/r").domain == domain


def test_internationalized_domain_is_kept_in_unicode() -> None:
    assert parse_jid("user@m\u00fcnchen.de").domain == "m\u00fcnchen.de"
    assert nameprep("xn--mnchen-3ya.de") == "xn--mnchen-3ya.de"


def test_resourceprep_applies_nfc() -> None:
    assert resourceprep("e\u0301") == "\u00e9"


def test_equal_jids_have_equal_hashes_and_deduplicate() -> None:
    a = parse_jid("Juliet@Example.com/r")
    b = JID("juliet", "example.com", "r")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, parse_jid("juliet@example.com/r")}) == 1
    assert a != parse_jid("juliet@example.com")
    assert a != parse_jid("juliet@example.com/R")


def test_jid_never_equals_a_string() -> None:
    jid = parse_jid("juliet@example.com")
    assert jid != "juliet@example.com"
    assert jid.__eq__("juliet@example.com") is NotImplemented


def test_bare_drops_the_resource_and_a_bare_jid_is_its_own_bare() -> None:
    full = parse_jid("juliet@example.com/balcony")
    assert full.bare == parse_jid("juliet@example.com")
    assert full.bare.resource is None
    bare = parse_jid("juliet@example.com")
    assert bare.bare is bare
    assert parse_jid("example.com/x").bare == parse_jid("example.com")


def test_with_resource_replaces_or_removes_the_resource() -> None:
    bare = parse_jid("juliet@example.com")
    full = bare.with_resource("phone")
    assert str(full) == "juliet@example.com/phone"
    assert str(full.with_resource("laptop")) == "juliet@example.com/laptop"
    assert full.with_resource(None) == bare
    assert full.with_resource("") == bare
    assert str(bare) == "juliet@example.com"


def test_empty_parts_given_to_the_constructor_mean_absent() -> None:
    jid = JID("", "example.com", "")
    assert (jid.local, jid.resource) == (None, None)
    assert str(jid) == "example.com"


def test_parse_is_cached_and_returns_equal_objects_for_equal_input() -> None:
    first = parse_jid("Romeo@Example.net/Home")
    again = parse_jid("Romeo@Example.net/Home")
    assert again == first
    assert again is first
    assert JID.of("romeo@example.net/Home") == first


def test_invalid_jid_is_a_value_error_and_is_not_cached_as_valid() -> None:
    for _ in range(2):
        with pytest.raises(ValueError, match="empty localpart"):
            parse_jid("@example.com")


def test_repr_shows_the_jid() -> None:
    assert repr(parse_jid("a@b/c")) == "JID('a@b/c')"
