"""The states of a client stream (see the state table in :mod:`roost.c2s.session`)."""

from enum import Enum


class State(Enum):
    HEADER = "header"  # waiting for the client's stream header
    FEATURES = "features"  # features sent; negotiating TLS, SASL or binding
    SASL = "sasl"  # a SASL exchange is in progress
    ESTABLISHED = "established"  # resource bound; stanzas flow
    CLOSED = "closed"
