"""roost: an instant-messaging server that speaks XMPP.

The package is laid out by architecture: ``roost.xmpp`` is the Sans-I/O protocol core,
``roost.c2s`` the client listeners, ``roost.router`` delivery, ``roost.modules`` one XMPP
feature per module, ``roost.storage`` the durable state, ``roost.cli`` the ``roost`` command
and ``roost.testing`` the pytest plugin that starts servers inside tests.
"""

from roost.compiled import verify as _verify_compiled

__version__ = "0.1.0"

_verify_compiled()  # a compiled module must not outlive its source (see roost.compiled)
