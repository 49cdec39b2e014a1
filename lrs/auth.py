"""HTTP Basic authentication and scope checks."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass

from fastapi import Request

from lrs.api.errors import XAPIError
from lrs.storage.credentials import Credential, CredentialRepository, verify_secret

# Scopes from xAPI practice plus the product's own.
KNOWN_SCOPES = frozenset(
    {
        "statements/write",
        "statements/read",
        "statements/read/mine",
        "state",
        "profile",
        "define",
        "all/read",
        "all",
        "progress/read",
        "progress/write",
        "admin",
    }
)


@dataclass
class _CacheEntry:
    fingerprint: bytes
    credential: Credential
    expires: float


class Authenticator:
    """Checks Basic credentials; remembers verified secrets briefly so the slow hash is not
    computed on every request."""

    def __init__(self, repository: CredentialRepository, cache_seconds: float) -> None:
        self.repository = repository
        self.cache_seconds = cache_seconds
        self._pepper = secrets.token_bytes(16)
        self._cache: dict[str, _CacheEntry] = {}

    def _fingerprint(self, secret: str) -> bytes:
        return hashlib.sha256(self._pepper + secret.encode()).digest()

    async def authenticate(self, authorization: str | None) -> Credential:
        key, secret = _parse_basic(authorization)
        fingerprint = self._fingerprint(secret)
        entry = self._cache.get(key)
        now = time.monotonic()
        if entry and entry.expires > now and secrets.compare_digest(entry.fingerprint, fingerprint):
            return entry.credential
        found = await self.repository.lookup(key)
        if found is None or found[0].revoked or not verify_secret(secret, found[1]):
            raise XAPIError(401, "invalid credentials", headers=_CHALLENGE)
        self._cache[key] = _CacheEntry(fingerprint, found[0], now + self.cache_seconds)
        return found[0]

    def forget(self, key: str) -> None:
        self._cache.pop(key, None)


_CHALLENGE = {"WWW-Authenticate": 'Basic realm="xAPI"'}


def _parse_basic(authorization: str | None) -> tuple[str, str]:
    if not authorization:
        raise XAPIError(401, "authentication required (HTTP Basic)", headers=_CHALLENGE)
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise XAPIError(401, "only HTTP Basic authentication is supported", headers=_CHALLENGE)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise XAPIError(401, "malformed Basic credentials", headers=_CHALLENGE) from exc
    key, sep, secret = decoded.partition(":")
    if not sep or not key:
        raise XAPIError(401, "malformed Basic credentials", headers=_CHALLENGE)
    return key, secret


# `all` is xAPI's "everything"; it does not reach the product's administration.
_NOT_IN_ALL = frozenset({"admin"})


def has_scope(credential: Credential, *accepted: str) -> bool:
    if any(scope in credential.scopes for scope in accepted):
        return True
    return "all" in credential.scopes and any(s not in _NOT_IN_ALL for s in accepted)


def require_scope(credential: Credential, *accepted: str) -> None:
    if not has_scope(credential, *accepted):
        raise XAPIError(403, f"this credential lacks the scope: one of {', '.join(accepted)}")


async def current_credential(request: Request) -> Credential:
    """FastAPI dependency: the authenticated credential of this request."""
    authenticator: Authenticator = request.app.state.services.authenticator
    credential = await authenticator.authenticate(request.headers.get("authorization"))
    request.state.credential = credential
    return credential
