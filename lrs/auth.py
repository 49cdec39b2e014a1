"""HTTP Basic authentication and scope checks.

Every request is checked against the store, cheaply:
- a secret verified once (scrypt, slow on purpose) is remembered in memory as a peppered
  SHA-256 fingerprint, and trusted while the credentials revision has not changed (a revocation
  or a replaced secret bumps it, lrs.storage.credentials); it is checked again at least every
  LRS_AUTH_CACHE_SECONDS (in the background while the client keeps using it); so the hot path
  costs a hash and one read of the revision, a read that requests arriving at the same moment
  share;
- the slow hash runs on a small thread pool, never on the event loop, and an unknown key is
  checked against a dummy hash so that it costs what a known key costs;
- failed attempts are throttled per key and per client address (lrs.throttle): 429 with
  Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from lrs.api.errors import XAPIError
from lrs.storage.credentials import (
    Credential,
    CredentialRepository,
    unknown_key_hash,
    verify_secret,
)
from lrs.storage.database import urgent_storage_calls
from lrs.throttle import FailureThrottle

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

# scrypt takes 16 MiB and tens of milliseconds per check: two at a time, off the event loop.
_VERIFIER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lrs-auth")
# In the last quarter of a remembered check's life, a request starts its renewal in the
# background and is served from memory: a busy client never waits for the slow hash again (every
# request of a credential used to stall behind one check whenever the remembered one expired).
_RENEW_FRACTION = 0.25

log = logging.getLogger(__name__)


@dataclass
class _Verified:
    fingerprint: bytes
    credential: Credential
    secret_hash: str
    revision: int
    expires: float


class SharedRead:
    """Reads a value for many concurrent callers with at most one read in flight: a caller
    gets the result of a read that started after it asked (so it never sees a value older than
    its own request), sharing it with everyone who asked while the previous read ran."""

    def __init__(self, read: Callable[[], Awaitable[int]]) -> None:
        self._read = read
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Future[int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self) -> int:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): nothing carries over
            self._loop, self._running, self._next = loop, None, None
        if self._next is None:
            self._next = loop.create_future()
            waiter = self._next
            if self._running is None:
                self._start()
        else:
            waiter = self._next
        return await asyncio.shield(waiter)

    def _start(self) -> None:
        waiter, self._next = self._next, None
        assert waiter is not None
        self._running = asyncio.ensure_future(self._read_into(waiter))

    async def _read_into(self, waiter: asyncio.Future[int]) -> None:
        try:
            waiter.set_result(await self._read())
        except Exception as exc:
            waiter.set_exception(exc)
            waiter.exception()  # retrieved: a caller that went away leaves no warning
        finally:
            self._running = None
            if self._next is not None:
                self._start()


class Authenticator:
    """Checks Basic credentials (see the module docstring)."""

    def __init__(
        self,
        repository: CredentialRepository,
        cache_seconds: float,
        throttle: FailureThrottle | None = None,
        *,
        paced: bool = False,
    ) -> None:
        self.repository = repository
        self.cache_seconds = cache_seconds
        # Where this process also derives progress (lrs.progress.dispatch.InProcessDispatcher),
        # the revision is read in the store's queue, in the derivation's lane: requests then
        # start at the pace the store takes them, and the derivation, on the same event loop,
        # keeps up with them (ack -> SSE p99 at 1,000 single POSTs/s offered: 167-175 ms so,
        # 377-459 ms when every request starts at once). Elsewhere it is read at once.
        self.paced = paced
        self.throttle = throttle or FailureThrottle()
        self._pepper = secrets.token_bytes(16)
        self._verified: dict[str, _Verified] = {}
        self._revision = SharedRead(self._read_revision)
        # Slow checks in flight, by (key, fingerprint, hash): a burst of requests with the same
        # credentials (a client's connections, all arriving once the remembered check expired)
        # waits for one check instead of queueing one each on the verifier's two threads.
        self._checks: dict[tuple[str, bytes, str], asyncio.Future[bool]] = {}
        self._renewals: dict[str, asyncio.Future[None]] = {}  # by key, at most one each

    async def _read_revision(self) -> int:
        # Every request waits for this read (it runs in a task of its own, SharedRead), so,
        # unless `paced`, it never queues behind writes (Database.read_now).
        if self.paced:
            urgent_storage_calls()
            return await self.repository.revision(queued=True)
        return await self.repository.revision()

    def _fingerprint(self, secret: str) -> bytes:
        return hashlib.sha256(self._pepper + secret.encode()).digest()

    async def authenticate(
        self, authorization: str | None, client: str | None = None
    ) -> Credential:
        try:
            key, secret = _parse_basic(authorization)
        except XAPIError:
            await self._refuse(None, client, count=authorization is not None)
            raise
        wait = await self.throttle.retry_after(key, client)
        if wait is not None:
            raise XAPIError(
                429,
                "too many failed authentication attempts; try again later",
                headers={"Retry-After": str(wait)},
            )
        revision = await self._revision.get()
        fingerprint = self._fingerprint(secret)
        now = time.monotonic()
        known = self._verified.get(key)
        if known is not None and not secrets.compare_digest(known.fingerprint, fingerprint):
            known = None
        if known is not None and known.revision == revision and known.expires > now:
            if known.expires - now < self.cache_seconds * _RENEW_FRACTION:
                self._renew(key, known, secret)
            return known.credential
        found = await self.repository.lookup(key)
        if found is None:
            await _verify(secret, unknown_key_hash())  # same cost as a known key
            return await self._refuse(key, client)
        credential, secret_hash = found
        if credential.revoked:
            await _verify(secret, secret_hash)
            self._verified.pop(key, None)
            return await self._refuse(key, client)
        # Verified before under an older revision, and the secret's hash is unchanged: the
        # fingerprint still proves the secret, no slow hash needed.
        same = known is not None and known.secret_hash == secret_hash and known.expires > now
        if not same and not await self._check(key, fingerprint, secret, secret_hash):
            return await self._refuse(key, client)
        self._verified[key] = _Verified(
            fingerprint, credential, secret_hash, revision, now + self.cache_seconds
        )
        return credential

    async def _check(self, key: str, fingerprint: bytes, secret: str, secret_hash: str) -> bool:
        """The slow check of a secret against its hash, shared by concurrent requests that
        present the same secret for the same key and hash."""
        token = (key, fingerprint, secret_hash)
        pending = self._checks.get(token)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(_verify(secret, secret_hash))
            self._checks[token] = pending
            pending.add_done_callback(lambda done: self._forget_check(token, done))
        return await asyncio.shield(pending)

    def _renew(self, key: str, known: _Verified, secret: str) -> None:
        if key in self._renewals:
            return
        renewal = asyncio.ensure_future(self._renewal(key, known, secret))
        self._renewals[key] = renewal
        renewal.add_done_callback(lambda _: self._renewals.pop(key, None))

    async def _renewal(self, key: str, known: _Verified, secret: str) -> None:
        """Check a remembered secret again, as its expiry would; extend it or forget it. The
        revision stays the one it was verified under: a change since then is still noticed."""
        try:
            found = await self.repository.lookup(key)
            if found is not None and not found[0].revoked:
                credential, secret_hash = found
                valid = await self._check(key, known.fingerprint, secret, secret_hash)
            else:
                valid = False
        except Exception:  # the next request after the expiry checks in line instead
            log.warning("could not renew the remembered check of %s", key, exc_info=True)
            return
        if self._verified.get(key) is not known:
            return  # replaced or forgotten meanwhile: that is newer
        if not valid:
            del self._verified[key]
            return
        self._verified[key] = _Verified(
            known.fingerprint,
            credential,
            secret_hash,
            known.revision,
            time.monotonic() + self.cache_seconds,
        )

    def _forget_check(self, token: tuple[str, bytes, str], done: asyncio.Future[bool]) -> None:
        if self._checks.get(token) is done:
            del self._checks[token]

    async def _refuse(self, key: str | None, client: str | None, count: bool = True) -> Credential:
        if count:
            await self.throttle.failed(key, client)
        raise XAPIError(401, "invalid credentials", headers=_CHALLENGE)

    def forget(self, key: str) -> None:
        self._verified.pop(key, None)


async def _verify(secret: str, secret_hash: str) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_VERIFIER, verify_secret, secret, secret_hash)


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
    client = request.client.host if request.client else None
    credential = await authenticator.authenticate(request.headers.get("authorization"), client)
    request.state.credential = credential
    return credential
