"""roost: an instant-messaging server that speaks XMPP.

The package is laid out by architecture: ``roost.xmpp`` is the Sans-I/O protocol core,
``roost.c2s`` the client listeners, ``roost.router`` delivery, ``roost.modules`` one XMPP
feature per module, ``roost.storage`` the durable state, ``roost.cli`` the ``roost`` command
and ``roost.testing`` the pytest plugin that starts servers inside tests.
"""

__version__ = "0.1.0"
