"""Credentials: HTTP Basic key/secret pairs, each bound to one store and a set of scopes.

Secrets are kept only as salted scrypt hashes.

The credentials revision (a counter in the `meta` collection) goes up whenever a credential
stops being valid as it was (revoked, or its secret or scopes replaced). API processes trust a
secret they verified only while the revision is unchanged, and read it on every request: one
read by primary key, which every process on any host sees, so a revocation takes effect at
once everywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lrs.storage.database import Collection, Database, DuplicateKeys
from lrs.storage.unit import Work, find_one

# scrypt parameters: about 30 ms and 16 MiB per check on a 2-core machine; verified secrets are
# cached in memory by the auth layer so that this cost is paid once per credential and period.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
# Checked against when a key is unknown, so that an unknown key costs what a known one does.
_UNKNOWN_KEY_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 32
_REVISION_ID = "credentials"


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


@dataclass(frozen=True)
class Credential:
    key: str
    store: str
    scopes: frozenset[str]
    name: str
    authority: dict[str, Any] = field(hash=False, compare=False)
    revoked: bool = False
    created: str = ""


def _from_doc(doc: dict[str, Any]) -> Credential:
    return Credential(
        key=doc["key"],
        store=doc["store"],
        scopes=frozenset(doc["scopes"]),
        name=doc.get("name", ""),
        authority=doc["authority"],
        revoked=bool(doc.get("revoked")),
        created=doc.get("created", ""),
    )


def unknown_key_hash() -> str:
    """A well-formed hash no secret matches, to verify against for unknown keys."""
    return _UNKNOWN_KEY_HASH


def new_key() -> str:
    """A fresh credential key: random, URL-safe, and never starting with "-", which a command
    line would take for an option (`lrs credentials revoke KEY`: one key in 64 did)."""
    while (key := secrets.token_urlsafe(18)).startswith("-"):
        pass
    return key


def _revision_work() -> Work[int]:
    doc = yield find_one("meta", {"_id": _REVISION_ID}, projection={"revision": 1})
    return int(doc["revision"]) if doc else 0


class CredentialRepository:
    def __init__(self, database: Database, public_url: str) -> None:
        self.database = database
        self.collection: Collection = database["credentials"]
        self.meta: Collection = database["meta"]
        self.public_url = public_url.rstrip("/")

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("key", 1)], unique=True, name="credential_key")

    async def create(
        self,
        store: str,
        scopes: list[str],
        name: str = "",
        *,
        key: str | None = None,
        secret: str | None = None,
    ) -> tuple[Credential, str]:
        """Create a credential; returns it with the plain secret, which is never stored."""
        key = key or new_key()
        secret = secret or secrets.token_urlsafe(32)
        authority = {
            "objectType": "Agent",
            "name": name or key,
            "account": {"homePage": f"{self.public_url}/credentials", "name": key},
        }
        doc = {
            "key": key,
            # scrypt takes tens of milliseconds: on a thread, not on the event loop.
            "secret_hash": await asyncio.to_thread(hash_secret, secret),
            "store": store,
            "scopes": sorted(set(scopes)),
            "name": name,
            "authority": authority,
            "created": datetime.now(UTC).isoformat(),
            "revoked": False,
        }
        await self.collection.insert_one(doc)
        return _from_doc(doc), secret

    async def ensure(self, store: str, scopes: list[str], name: str, key: str, secret: str) -> None:
        """Create or update a bootstrap credential so that the given key/secret work."""
        current = await self.collection.find_one({"key": key})
        if current is None:
            try:
                await self.create(store, scopes, name, key=key, secret=secret)
                return
            except DuplicateKeys:  # another process (lrs serve --workers) created it meanwhile
                current = await self.collection.find_one({"key": key})
                assert current is not None
        same_secret = await asyncio.to_thread(verify_secret, secret, current["secret_hash"])
        if not same_secret or set(current["scopes"]) != set(scopes):
            await self.collection.update_one(
                {"key": key},
                {
                    "$set": {
                        "secret_hash": await asyncio.to_thread(hash_secret, secret),
                        "scopes": sorted(set(scopes)),
                        "store": store,
                        "revoked": False,
                    }
                },
            )
            await self._bump_revision()

    async def lookup(self, key: str) -> tuple[Credential, str] | None:
        """The credential and its secret hash, or None."""
        doc = await self.collection.find_one({"key": key})
        if doc is None:
            return None
        return _from_doc(doc), doc["secret_hash"]

    async def list(self, store: str | None = None) -> list[Credential]:
        filter = {"store": store} if store else {}
        return [_from_doc(doc) for doc in await self.collection.find(filter, sort=[("key", 1)])]

    async def revoke(self, key: str, store: str | None = None) -> bool:
        """Revoke the credential (only within `store`, when given); False if there is none.
        Effective in every process once this returns."""
        filter = {"key": key} if store is None else {"key": key, "store": store}
        if not await self.collection.update_one(filter, {"$set": {"revoked": True}}):
            return False
        await self._bump_revision()
        return True

    async def revision(self, *, queued: bool = False) -> int:
        """The credentials revision: changes whenever a credential stops being valid as it was.
        Every request reads it (lrs.auth), so it is read without waiting behind writes, unless
        `queued` (lrs.auth.Authenticator.paced)."""
        if queued:
            return await self.database.run(_revision_work(), write=False)
        return await self.database.read_now(_revision_work())

    async def _bump_revision(self) -> None:
        await self.meta.update_one({"_id": _REVISION_ID}, {"$inc": {"revision": 1}}, upsert=True)
