"""roost.xmpp.sasl: SCRAM against scramp's client, PLAIN parsing, stored credentials."""

from __future__ import annotations

import base64

import pytest
import scramp

from roost.storage.base import ScramCredentials
from roost.xmpp import sasl
from roost.xmpp.sasl import (
    DEFAULT_ITERATIONS,
    SCRAM_MECHANISMS,
    SASLFailure,
    ScramExchange,
    make_credentials,
    parse_plain,
    verify_password,
)

PASSWORD = "pencil \u00e9"


@pytest.fixture(scope="module")
def credentials() -> dict[str, ScramCredentials]:
    return {c.mechanism: c for c in make_credentials(PASSWORD)}


def _fields(message: bytes) -> dict[str, str]:
    """The attributes of a SCRAM message ("r=...,s=...,i=...")."""
    fields: dict[str, str] = {}
    for part in message.decode().split(","):
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


def _exchange(
    mechanism: str, username: str, password: str, credentials: ScramCredentials | None
) -> tuple[scramp.ScramClient, bytes]:
    """Run a SCRAM exchange up to the server-final message (raises SASLFailure)."""
    client = scramp.ScramClient([mechanism], username, password)
    exchange = ScramExchange(mechanism)
    assert exchange.start(client.get_client_first().encode()) == username
    client.set_server_first(exchange.challenge(credentials).decode())
    return client, exchange.finish(client.get_client_final().encode())


# -- stored credentials ------------------------------------------------------------------------


def test_credentials_are_made_for_every_scram_mechanism(
    credentials: dict[str, ScramCredentials],
) -> None:
    assert set(credentials) == set(SCRAM_MECHANISMS)
    sha256, sha1 = credentials["SCRAM-SHA-256"], credentials["SCRAM-SHA-1"]
    assert (len(sha256.stored_key), len(sha256.server_key)) == (32, 32)
    assert (len(sha1.stored_key), len(sha1.server_key)) == (20, 20)
    assert sha256.iterations == sha1.iterations == DEFAULT_ITERATIONS
    assert len(sha256.salt) == 16
    assert sha256.salt != sha1.salt
    assert PASSWORD.encode() not in sha256.stored_key + sha256.server_key + sha256.salt


def test_credentials_for_the_same_password_are_salted_differently() -> None:
    first = make_credentials(PASSWORD, iterations=4096)[0]
    second = make_credentials(PASSWORD, iterations=4096)[0]
    assert first.salt != second.salt
    assert first.stored_key != second.stored_key


def test_credentials_record_the_iteration_count() -> None:
    creds = make_credentials("secret", iterations=5000)
    assert {c.iterations for c in creds} == {5000}
    assert all(verify_password(c, "secret") for c in creds)


def test_verify_password_accepts_the_password_and_rejects_others(
    credentials: dict[str, ScramCredentials],
) -> None:
    for creds in credentials.values():
        assert verify_password(creds, PASSWORD) is True
        assert verify_password(creds, "pencil") is False
        assert verify_password(creds, PASSWORD.upper()) is False
        assert verify_password(creds, "") is False


def test_passwords_are_saslprepped_before_hashing() -> None:
    # RFC 4013 §3: SOFT HYPHEN maps to nothing, NO-BREAK SPACE to SPACE.
    creds = make_credentials("I\u00adX a\u00a0b")[0]
    assert verify_password(creds, "IX a b")


def test_password_with_prohibited_characters_cannot_be_set_or_verified() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        make_credentials("bell\x07")
    creds = make_credentials("bell")[0]
    assert verify_password(creds, "bell\x07") is False


# -- SCRAM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_scram_exchange_with_the_right_password_succeeds_and_the_client_verifies_the_server(
    mechanism: str, credentials: dict[str, ScramCredentials]
) -> None:
    client, final = _exchange(mechanism, "juliet", PASSWORD, credentials[mechanism])
    assert final.startswith(b"v=")
    client.set_server_final(final.decode())  # raises if the server signature is wrong


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_client_rejects_a_server_that_does_not_know_the_keys(
    mechanism: str, credentials: dict[str, ScramCredentials]
) -> None:
    client, final = _exchange(mechanism, "juliet", PASSWORD, credentials[mechanism])
    forged = b"v=" + base64.b64encode(b"\x00" * len(base64.b64decode(final[2:])))
    with pytest.raises(scramp.ScramException):
        client.set_server_final(forged.decode())


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_scram_exchange_with_a_wrong_password_fails_not_authorized(
    mechanism: str, credentials: dict[str, ScramCredentials]
) -> None:
    with pytest.raises(SASLFailure) as info:
        _exchange(mechanism, "juliet", "wrong", credentials[mechanism])
    assert info.value.condition == "not-authorized"


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_unknown_user_fails_exactly_like_a_wrong_password(mechanism: str) -> None:
    with pytest.raises(SASLFailure) as info:
        _exchange(mechanism, "nobody", "anything", None)
    assert info.value.condition == "not-authorized"
    assert info.value.text is None


@pytest.mark.parametrize("mechanism", SCRAM_MECHANISMS)
def test_unknown_user_gets_the_same_salt_on_every_attempt(mechanism: str) -> None:
    def salt_for(user: str) -> tuple[str, str]:
        exchange = ScramExchange(mechanism)
        exchange.start(f"n,,n={user},r=abcdef".encode())
        fields = _fields(exchange.challenge(None))
        assert fields["r"].startswith("abcdef")
        return fields["s"], fields["i"]

    first = salt_for("ghost")
    assert salt_for("ghost") == first
    assert first[1] == str(DEFAULT_ITERATIONS)
    assert len(base64.b64decode(first[0])) == 16
    assert salt_for("other-ghost") != first


def test_challenge_for_a_known_user_carries_the_stored_salt_and_iterations(
    credentials: dict[str, ScramCredentials],
) -> None:
    creds = credentials["SCRAM-SHA-256"]
    exchange = ScramExchange("SCRAM-SHA-256")
    exchange.start(b"n,,n=juliet,r=clientnonce")
    fields = _fields(exchange.challenge(creds))
    assert base64.b64decode(fields["s"]) == creds.salt
    assert fields["i"] == str(creds.iterations)
    assert fields["r"].startswith("clientnonce")
    assert len(fields["r"]) > len("clientnonce")


def test_start_reads_the_user_name_and_authzid_and_unescapes_them() -> None:
    exchange = ScramExchange("SCRAM-SHA-1")
    assert exchange.start(b"n,a=adm=2Cin=3D,n=us=3Der=2C,r=abc") == "us=er,"
    assert exchange.username == "us=er,"
    assert exchange.authzid == "adm,in="


def test_start_accepts_a_client_that_supports_channel_binding_we_do_not_offer() -> None:
    assert ScramExchange("SCRAM-SHA-1").start(b"y,,n=juliet,r=abc") == "juliet"


def test_channel_binding_request_fails_malformed_request() -> None:
    with pytest.raises(SASLFailure) as info:
        ScramExchange("SCRAM-SHA-256").start(b"p=tls-unique,,n=juliet,r=abc")
    assert info.value.condition == "malformed-request"
    assert info.value.text is not None
    assert "channel binding" in info.value.text


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"n,,juliet,r=abc", id="no-n-equals"),
        pytest.param(b"x,,n=juliet,r=abc", id="bad-cbind-flag"),
        pytest.param(b"n,z=admin,n=juliet,r=abc", id="bad-authzid"),
        pytest.param(b"n,,n=,r=abc", id="empty-user"),
        pytest.param(b"n,,n=juliet", id="no-nonce"),
        pytest.param(b"n,,n=\xff,r=abc", id="not-utf8"),
    ],
)
def test_malformed_client_first_fails_malformed_request(message: bytes) -> None:
    with pytest.raises(SASLFailure) as info:
        ScramExchange("SCRAM-SHA-256").start(message)
    assert info.value.condition == "malformed-request"


def test_client_first_that_scramp_rejects_fails_at_the_challenge_as_malformed_request(
    credentials: dict[str, ScramCredentials],
) -> None:
    exchange = ScramExchange("SCRAM-SHA-256")
    exchange.start(b"n,,n=juliet,x=abc")  # no r= nonce
    with pytest.raises(SASLFailure) as info:
        exchange.challenge(credentials["SCRAM-SHA-256"])
    assert info.value.condition == "malformed-request"


def test_finish_before_challenge_fails_malformed_request() -> None:
    exchange = ScramExchange("SCRAM-SHA-1")
    exchange.start(b"n,,n=juliet,r=abc")
    with pytest.raises(SASLFailure) as info:
        exchange.finish(b"c=biws,r=abc,p=AAAA")
    assert info.value.condition == "malformed-request"


@pytest.mark.parametrize(
    "final",
    [
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"c=biws,r=wrongnonce,p=AAAA", id="wrong-nonce"),
    ],
)
def test_bad_client_final_fails_not_authorized(
    final: bytes, credentials: dict[str, ScramCredentials]
) -> None:
    exchange = ScramExchange("SCRAM-SHA-1")
    exchange.start(b"n,,n=juliet,r=abc")
    exchange.challenge(credentials["SCRAM-SHA-1"])
    with pytest.raises(SASLFailure) as info:
        exchange.finish(final)
    assert info.value.condition == "not-authorized"


def test_unsupported_mechanism_fails_invalid_mechanism() -> None:
    with pytest.raises(SASLFailure) as info:
        ScramExchange("DIGEST-MD5")
    assert info.value.condition == "invalid-mechanism"


# -- base64 ---------------------------------------------------------------------------------------


def test_bad_base64_fails_incorrect_encoding() -> None:
    for data in ["!!!", "abc", "YQ=Y"]:
        with pytest.raises(SASLFailure) as info:
            sasl.b64decode(data)
        assert info.value.condition == "incorrect-encoding"


def test_base64_empty_response_is_an_equals_sign() -> None:
    assert sasl.b64decode("=") == b""
    assert sasl.b64decode("") == b""
    assert sasl.b64encode(b"") == "="
    assert sasl.b64decode(" \n" + sasl.b64encode(b"\x00data") + "\n") == b"\x00data"


# -- PLAIN ---------------------------------------------------------------------------------------


def test_plain_without_authzid() -> None:
    creds = parse_plain(b"\x00juliet\x00" + PASSWORD.encode())
    assert (creds.authzid, creds.authcid, creds.password) == ("", "juliet", PASSWORD)


def test_plain_with_authzid() -> None:
    creds = parse_plain(b"juliet@example.com\x00juliet\x00secret")
    assert (creds.authzid, creds.authcid, creds.password) == (
        "juliet@example.com",
        "juliet",
        "secret",
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"juliet\x00secret", id="two-parts"),
        pytest.param(b"\x00\x00secret", id="empty-authcid"),
        pytest.param(b"\x00juliet\x00", id="empty-password"),
        pytest.param(b"a\x00juliet\x00se\x00cret", id="four-parts"),
        pytest.param(b"\x00juli\xffet\x00secret", id="authcid-not-utf8"),
        pytest.param(b"\x00juliet\x00\xc3", id="password-not-utf8"),
        pytest.param(b"\xff\x00juliet\x00secret", id="authzid-not-utf8"),
    ],
)
def test_malformed_plain_fails_malformed_request(message: bytes) -> None:
    with pytest.raises(SASLFailure) as info:
        parse_plain(message)
    assert info.value.condition == "malformed-request"


def test_sasl_failure_reports_condition_and_text() -> None:
    failure = SASLFailure("not-authorized", "bad password")
    assert (failure.condition, failure.text) == ("not-authorized", "bad password")
    assert str(failure) == "not-authorized: bad password"
    assert str(SASLFailure("aborted")) == "aborted"
