"""The small core of a roost node: hooks, the module API and the server object that ties
storage, routing and listeners together. Every XMPP feature lives in :mod:`roost.modules`."""
