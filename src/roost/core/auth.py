"""Accounts and authentication on top of storage: SCRAM keys in, yes-or-no out.

PLAIN verification runs PBKDF2 (thousands of HMACs, about a millisecond) and creating an
account runs it twice; both happen in the default thread pool so that a burst of logins does
not stall the event loop (hashlib releases the GIL while it hashes).
"""

from __future__ import annotations

import asyncio
from functools import partial

from roost.storage.base import ScramCredentials, Storage
from roost.xmpp.jid import parse_jid
from roost.xmpp.sasl import make_credentials, verify_password


class Authenticator:
    __slots__ = ("_iterations", "_storage")

    def __init__(self, storage: Storage, iterations: int) -> None:
        self._storage = storage
        self._iterations = iterations

    async def scram_credentials(self, jid: str, mechanism: str) -> ScramCredentials | None:
        return await self._storage.get_credentials(jid, mechanism)

    async def verify_plain(self, jid: str, password: str) -> bool:
        credentials = await self._storage.get_credentials(jid, "SCRAM-SHA-256")
        if credentials is None:
            credentials = await self._storage.get_credentials(jid, "SCRAM-SHA-1")
        if credentials is None:
            return False
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, verify_password, credentials, password)

    async def _credentials(self, password: str) -> list[ScramCredentials]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, partial(make_credentials, password, self._iterations)
        )

    async def create_user(self, jid: str, password: str) -> bool:
        """Create an account; False if it exists. Raises ValueError for a bad JID/password."""
        bare = parse_jid(jid).bare_str
        if await self._storage.user_exists(bare):
            return False  # answer a taken name without paying for two key derivations
        return await self._storage.create_user(bare, await self._credentials(password))

    async def set_password(self, jid: str, password: str) -> bool:
        bare = parse_jid(jid).bare_str
        return await self._storage.set_credentials(bare, await self._credentials(password))
