"""roost bench load against a scripted server that speaks XMPP differently from roost.

Differences the generator must tolerate, all legal: an XML declaration in double quotes, a
stream prefix other than ``stream:``, double-quoted attributes, whitespace keepalives between
every stanza, a required RFC 3921 ``<session/>``, SCRAM only (with the server-final message
sent as a challenge, which some servers do), and messages delivered with extra payload.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from scramp import ScramMechanism

from roost.bench.load import LoadConfig, User, run_load
from roost.bench.load.scan import Framer, attribute, child_text, local_name

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
PASSWORD = "pw"


@dataclass
class Dialect:
    mechanism: str = "PLAIN"
    final_as_challenge: bool = False
    routes: dict[str, asyncio.StreamWriter] = field(default_factory=dict)
    scram: Any = None
    sessions: int = 0  # RFC 3921 session requests seen


def _header(authenticated: bool, mechanism: str) -> bytes:
    if authenticated:
        features = (
            b'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>'
            b'<session xmlns="urn:ietf:params:xml:ns:xmpp-session"/>'
        )
    else:
        features = (
            f'<mechanisms xmlns="{SASL}">\n  <mechanism>{mechanism}</mechanism>\n</mechanisms>'
        ).encode()
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<s:stream xmlns:s="http://etherx.jabber.org/streams" xmlns="jabber:client" '
        b'id="d1" from="localhost" version="1.0">\n  '
        b"<s:features>" + features + b"</s:features>\n"
    )


async def _serve(dialect: Dialect, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    framer = Framer()
    authenticated = False
    jid = ""
    while data := await reader.read(65536):
        for element in framer.feed(data):
            name = local_name(element)
            if element.startswith(b"</"):
                w.write(b"</s:stream>")
                w.close()
                return
            if name == b"stream":
                w.write(_header(authenticated, dialect.mechanism))
            elif name in (b"auth", b"response"):
                reply = _sasl(dialect, element)
                if reply.startswith(b"<success"):
                    authenticated = True
                    framer.reset()
                w.write(reply)
            elif name == b"iq":
                ident = attribute(element, b"id")
                if b"xmpp-bind" in element:
                    jid = f"{child_text(element, b'resource')}-{len(dialect.routes)}"
                    jid = f"user{len(dialect.routes)}@localhost/{jid}"
                    dialect.routes[jid] = w
                    body = f'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><jid>{jid}</jid></bind>'
                else:
                    dialect.sessions += b"xmpp-session" in element
                    body = ""
                w.write(f'<iq type="result" id="{ident}">{body}</iq>'.encode())
            elif name == b"presence":
                w.write(f'<presence from="{jid}"></presence>'.encode())
            elif name == b"message":
                target = dialect.routes[attribute(element, b"to") or ""]
                rest = element[len(b"<message") : -len(b"</message>")]
                target.write(
                    f'<message from="{jid}"'.encode()
                    + rest
                    + b'<stanza-id xmlns="urn:xmpp:sid:0" id="x"/></message> \n'
                )
            w.write(b" ")  # a whitespace keepalive after everything


def _sasl(dialect: Dialect, element: bytes) -> bytes:
    text = element[element.find(b">") + 1 : element.rfind(b"<")]
    data = base64.b64decode(text).decode() if text not in (b"", b"=") else ""
    if dialect.mechanism == "PLAIN":
        ok = data.split("\0")[2] == PASSWORD
        return f'<{"success" if ok else "failure"} xmlns="{SASL}"/>'.encode()
    if dialect.scram is None:  # client-first
        mechanism = ScramMechanism(dialect.mechanism)
        info = mechanism.make_auth_info(PASSWORD, iteration_count=4096)
        dialect.scram = mechanism.make_server(lambda _: info)
        dialect.scram.set_client_first(data)
        return _sasl_element("challenge", dialect.scram.get_server_first())
    if data:  # client-final
        dialect.scram.set_client_final(data)
        final = dialect.scram.get_server_final()
        if dialect.final_as_challenge:
            return _sasl_element("challenge", final)
        dialect.scram = None
        return _sasl_element("success", final)
    dialect.scram = None  # the empty response after a server-final challenge
    return f'<success xmlns="{SASL}"/>'.encode()


def _sasl_element(name: str, text: str) -> bytes:
    return f'<{name} xmlns="{SASL}">{base64.b64encode(text.encode()).decode()}</{name}>'.encode()


@pytest.fixture
async def dialect_port(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Dialect]]:
    dialect: Dialect = request.param
    server = await asyncio.start_server(lambda r, w: _serve(dialect, r, w), "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], dialect


@pytest.mark.parametrize(
    "dialect_port",
    [
        Dialect(),
        Dialect(mechanism="SCRAM-SHA-1"),
        Dialect(mechanism="SCRAM-SHA-1", final_as_challenge=True),
    ],
    indirect=True,
    ids=["plain", "scram", "scram-final-as-challenge"],
)
async def test_another_dialect(dialect_port: tuple[int, Dialect]) -> None:
    port, dialect = dialect_port
    users = [User("user0", PASSWORD), User("user1", PASSWORD)]
    config = LoadConfig(
        "127.0.0.1",
        port,
        "localhost",
        clients=2,
        users=users,
        duration=30.0,
        max_messages=40,
        connect_concurrency=1,  # the fake server numbers users in connection order
    )
    result = await run_load(config)
    assert result.ok, result.problems
    assert result.traffic["delivered"] == 40
    assert result.traffic["duplicates"] == 0
    assert dialect.sessions == 2  # required here, so both clients asked for one
