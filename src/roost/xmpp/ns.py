"""XML namespaces used across roost, named after what they are for (RFC 6120, RFC 6121, XEPs)."""

from typing import Final

STREAM: Final = "http://etherx.jabber.org/streams"
CLIENT: Final = "jabber:client"
SERVER: Final = "jabber:server"
FRAMING: Final = "urn:ietf:params:xml:ns:xmpp-framing"  # RFC 7395 WebSocket framing
XML: Final = "http://www.w3.org/XML/1998/namespace"

STREAMS: Final = "urn:ietf:params:xml:ns:xmpp-streams"  # stream error conditions
STANZAS: Final = "urn:ietf:params:xml:ns:xmpp-stanzas"  # stanza error conditions
TLS: Final = "urn:ietf:params:xml:ns:xmpp-tls"
SASL: Final = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND: Final = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION: Final = "urn:ietf:params:xml:ns:xmpp-session"

ROSTER: Final = "jabber:iq:roster"
ROSTER_VER: Final = "urn:xmpp:features:rosterver"
PRE_APPROVAL: Final = "urn:xmpp:features:pre-approval"
DISCO_INFO: Final = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS: Final = "http://jabber.org/protocol/disco#items"
PING: Final = "urn:xmpp:ping"
VERSION: Final = "jabber:iq:version"
VCARD: Final = "vcard-temp"
REGISTER: Final = "jabber:iq:register"
REGISTER_FEATURE: Final = "http://jabber.org/features/iq-register"
DELAY: Final = "urn:xmpp:delay"
OFFLINE: Final = "msgoffline"
DATA_FORMS: Final = "jabber:x:data"
SM: Final = "urn:xmpp:sm:3"  # XEP-0198 stream management
