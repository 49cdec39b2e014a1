"""Forwarding: every statement stored after a destination was created, and matching its filter,
is delivered to it at least once, in `stored` order where possible.

Two durable steps, each safe to repeat:

1. Fan-out. Every committed statement batch leaves a `forward` entry in the outbox
   (lrs.storage.outbox); on the embedded store, only while its store has a destination (one
   created later catches up, see below, and none is created during the batch's transaction).
   Fan-out turns a set of statements into delivery groups, one per destination that wants
   them, then deletes the entry. A crash in between repeats the fan-out, which inserts nothing
   twice (group ids derive from their content).
2. Delivery. Whoever holds a destination's lease sends its oldest due groups, POSTing a batch
   where the peer takes it and falling back to one PUT per statement when the batch is refused,
   so one bad statement cannot hold back the others. Outcomes:
   - 2xx, or 409 for a statement the peer holds in an equivalent form: delivered (row removed);
   - connection errors, timeouts, 5xx, 408, 429: the group is retried after an exponential
     back-off with jitter (at least the peer's Retry-After), and the destination holds back
     until then, so the order is kept and a peer that is down is not hammered; after the last
     attempt the group's statements become dead letters;
   - any other 4xx for one statement: a dead letter at once, with the peer's answer.
   A dead letter stays until an operator replays it.

The sender renews its lease while it works through a batch (one PUT per statement can take
longer than the lease), and stops when it lost it or the destination was disabled. Enabling a
destination, changing how it is reached or replaying dead letters means "try now": the hold is
lifted and every pending group is due at once, so the held statements still go first.

A destination wants the statements whose `stored` is not before its `created_key`, taken just
before it is saved. A fan-out that read the destinations in between left it out: once saved,
the destination catches up (`catch_up`) by reading the statements stored since then; if the
process dies before, it stays marked (`caught_up: false`) and the sweep does it.

A statement pulled from a source (lrs.federation.pulling) is not forwarded to a destination
that is that same source (same endpoint, same username: the same store of the same LRS): it
would only echo back what the peer holds.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from lrs.federation.client import (
    PeerAnswer,
    PeerClient,
    PeerConfig,
    PeerError,
    PeerRefused,
    normalise_endpoint,
    parts_for,
)
from lrs.federation.filters import StatementFilter
from lrs.federation.peers import peer_config
from lrs.federation.secrets import SecretError, SecretKeys
from lrs.storage.federation import (
    DeliveryRepository,
    DestinationRepository,
    SourceRepository,
    group_id,
    now_micros,
)
from lrs.storage.statements import StatementRepository
from lrs.xapi.agents import agent_key
from lrs.xapi.attachments import AttachmentError, AttachmentPart, iter_attachments
from lrs.xapi.comparison import statements_equivalent
from lrs.xapi.jsontext import parse_stored

log = logging.getLogger("lrs.federation")

_MAX_RETRY_AFTER = 3600.0  # a peer's Retry-After is honoured up to an hour
_CATCH_UP_PAGE = 1000  # statements read at a time when a new destination catches up


@dataclass(frozen=True)
class ForwardingSettings:
    batch_size: int = 100  # statements per POST (a destination may ask for fewer)
    max_attempts: int = 20  # with the defaults below: about three hours of retrying
    backoff_base: float = 2.0  # seconds before the first retry
    backoff_max: float = 900.0  # longest wait between two attempts
    timeout: float = 30.0  # per HTTP request
    lease: float = 120.0  # seconds a sender owns a destination without renewing
    pass_budget: float = 30.0  # seconds one delivery pass keeps a destination


def backoff_delay(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential back-off with "equal jitter": half the step fixed, half random, so that
    retries against a peer that just came back do not all arrive at once."""
    step = min(cap, base * 2 ** max(0, attempts - 1))
    return step / 2 + rng.uniform(0, step / 2)


def _error(message: str, status: int | None = None) -> dict[str, Any]:
    return {"message": message[:2000], "status": status, "at_key": now_micros()}


def _answer_error(answer: PeerAnswer) -> dict[str, Any]:
    return _error(answer.describe(), answer.status)


@dataclass
class _Outcome:
    delivered: set[str]
    dead: dict[str, dict[str, Any]]  # statement id -> error
    failure: dict[str, Any] | None = None  # set when the destination failed as a whole
    retry_after: float | None = None
    interrupted: bool = False  # the lease was lost (or the destination disabled) on the way


class _LeaseLost(Exception):
    pass


def same_peer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two stored peers (destination, source) that are the same store of the same LRS."""

    def key(doc: dict[str, Any]) -> tuple[str, str | None]:
        endpoint = normalise_endpoint(str(doc.get("endpoint") or ""))
        scheme, _, rest = endpoint.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme.lower()}://{host.lower()}{slash}{path}", doc.get("username")

    return key(a) == key(b)


class Forwarder:
    def __init__(
        self,
        statements: StatementRepository,
        destinations: DestinationRepository,
        deliveries: DeliveryRepository,
        keys: SecretKeys,
        settings: ForwardingSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sources: SourceRepository | None = None,
        public_url: str = "",
    ) -> None:
        self.statements = statements
        self.destinations = destinations
        self.deliveries = deliveries
        self.keys = keys
        self.settings = settings
        self.transport = transport  # tests may route peer traffic through their own transport
        self.rng = rng or random.Random()
        # To recognise statements pulled from a source that is also a destination.
        self.sources = sources
        self.public_url = public_url

    # --- fan-out -----------------------------------------------------------------------------

    async def fan_out(
        self, store: str, ids: list[str], entries: list[str] | tuple[str, ...] = ()
    ) -> list[str]:
        """Create the delivery groups of these statements, then delete the outbox entries
        that owed them. Returns the destinations that got new work."""
        destinations = await self.destinations.of_store(store) if ids else []
        touched = await self._queue(store, ids, destinations) if destinations else []
        await self.statements.outbox.done(list(entries))
        return touched

    async def catch_up(self, destination: dict[str, Any]) -> bool:
        """Queue for a destination just saved the statements stored since its `created_key`.

        A fan-out reads the destinations after its statements are stored. One that read them
        just before this destination was saved left it out, although its statements' `stored`
        may not be before `created_key` (taken before the save). Those statements were stored
        before the save, so this read, made after it, finds them. Some statements may be queued
        twice (by their own fan-out as well): delivery is at least once. Returns True when
        something was queued."""
        store, since = destination["store"], destination["created_key"]
        queued = False
        for voided in (False, True):  # the (store, voided, stored_key) index serves each
            after: tuple[int, str] | None = None
            while True:
                filter: dict[str, Any] = {
                    "store": store,
                    "voided": voided,
                    "stored_key": {"$gte": since if after is None else after[0]},
                }
                if after is not None:
                    key, last = after
                    filter["$or"] = [{"stored_key": {"$gt": key}}, {"id": {"$gt": last}}]
                docs = await self.statements.statements.find(
                    filter,
                    projection={"id": 1, "stored_key": 1},
                    sort=[("stored_key", 1), ("id", 1)],
                    limit=_CATCH_UP_PAGE,
                )
                if docs:
                    ids = [doc["id"] for doc in docs]
                    queued |= bool(await self._queue(store, ids, [destination]))
                if len(docs) < _CATCH_UP_PAGE:
                    break
                after = (docs[-1]["stored_key"], docs[-1]["id"])
        # Marked only now: a process that dies before this leaves it to the sweep.
        await self.destinations.record(destination["_id"], fields={"caught_up": True})
        return queued

    async def _queue(
        self, store: str, ids: list[str], destinations: list[dict[str, Any]]
    ) -> list[str]:
        """Add the delivery groups of these statements for these destinations; returns the
        destinations that got new work."""
        touched: list[str] = []
        fields = await self.statements.routing_fields(store, ids)
        targets = await self._voided_targets(store, fields)
        echoes = await self._echoes(store, destinations, ids)
        rows: list[dict[str, Any]] = []
        now = now_micros()
        for destination in destinations:
            wanted = self._wanted(destination, fields, targets)
            echo = echoes.get(destination["_id"])
            if echo:
                wanted = [f for f in wanted if f["id"] not in echo]
            size = self._batch_size(destination)
            for seq, start in enumerate(range(0, len(wanted), size)):
                chunk = wanted[start : start + size]
                chunk_ids = [f["id"] for f in chunk]
                rows.append(
                    {
                        "_id": group_id(destination["_id"], chunk_ids),
                        "store": store,
                        "destination": destination["_id"],
                        "statements": chunk_ids,
                        "count": len(chunk_ids),
                        "stored_key": chunk[0]["stored_key"],
                        # Groups of one fan-out may share their first `stored`: keep order.
                        "seq": seq,
                        "attempts": 0,
                        "next_attempt_key": 0,
                        "created_key": now,
                        "last_error": None,
                    }
                )
            if wanted:
                touched.append(destination["_id"])
        await self.deliveries.add(rows)
        if touched:
            # A destination deleted since it was read: its delete may have dropped its rows
            # before these were added. (Deleted after this read: its delete comes after the
            # rows were added and drops them.)
            present = {d["_id"] for d in await self.destinations.of_store(store)}
            for destination_id in [d for d in touched if d not in present]:
                await self.deliveries.drop_destination(destination_id)
                touched.remove(destination_id)
        return touched

    async def _echoes(
        self, store: str, destinations: list[dict[str, Any]], ids: list[str]
    ) -> dict[str, set[str]]:
        """For each destination that is also a source of this store: the statements among
        `ids` that were pulled from it (stored under that source's authority)."""
        if self.sources is None:
            return {}
        sources = await self.sources.list(store)
        pairs = {
            destination["_id"]: {
                self._pulled_authority(source)
                for source in sources
                if same_peer(destination, source)
            }
            for destination in destinations
        }
        pairs = {d: keys for d, keys in pairs.items() if keys}
        if not pairs:
            return {}
        docs = await self.statements.find_by_ids(store, ids)
        return {
            destination_id: {i for i, doc in docs.items() if doc.get("authority_key") in keys}
            for destination_id, keys in pairs.items()
        }

    def _pulled_authority(self, source: dict[str, Any]) -> str | None:
        from lrs.federation.pulling import source_credential

        return agent_key(source_credential(source, self.public_url).authority)

    async def _voided_targets(
        self, store: str, fields: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        wanted = [f["voids"] for f in fields if f.get("voids")]
        if not wanted:
            return {}
        return {f["id"]: f for f in await self.statements.routing_fields(store, wanted)}

    def _wanted(
        self,
        destination: dict[str, Any],
        fields: list[dict[str, Any]],
        targets: dict[str, dict[str, Any]],
    ) -> list[dict[str, Any]]:
        statement_filter = StatementFilter.from_doc(destination.get("filter"))
        since = destination["created_key"]
        wanted = []
        for f in fields:
            if f["stored_key"] < since:
                continue  # stored before the destination existed
            if f.get("voids"):
                if not destination.get("forward_voiding", True):
                    continue
                target = targets.get(f["voids"])
                if not statement_filter.is_empty and (
                    target is None or not statement_filter.matches(target)
                ):
                    continue
            elif not statement_filter.matches(f):
                continue
            wanted.append(f)
        return wanted

    def _batch_size(self, destination: dict[str, Any]) -> int:
        return max(1, min(destination.get("batch_size") or self.settings.batch_size, 1000))

    # --- delivery ----------------------------------------------------------------------------

    async def has_due(self, destination_id: str) -> bool:
        return await self.deliveries.has_due(destination_id, now_micros())

    async def deliver(self, destination_id: str, budget: float | None = None) -> bool:
        """One delivery pass for a destination, under its lease. Returns True when due work
        was left (the pass ran out of time or lost its lease) and another pass should follow."""
        if not await self.has_due(destination_id):
            return False
        owner = uuid.uuid4().hex
        now = now_micros()
        destination = await self.destinations.leases.acquire(
            destination_id,
            owner,
            self.settings.lease,
            extra={"enabled": True, "hold_until": {"$lte": now}},
        )
        if destination is None:
            return False  # disabled, holding back after a failure, deleted, or someone else's
        acquired = time.monotonic()
        deadline = acquired + (self.settings.pass_budget if budget is None else budget)
        try:
            try:
                client = PeerClient(await self.peer_config(destination), self.transport)
            except (SecretError, ValueError, httpx.InvalidURL) as exc:
                # LRS_SECRET_KEY changed, or a stored header no HTTP client can send: nothing
                # can be sent, say so (without the values) and look again later.
                message = (
                    str(exc)
                    if isinstance(exc, SecretError)
                    else f"the destination's configuration cannot be used "
                    f"({type(exc).__name__}); check its endpoint and headers"
                )
                hold = now_micros() + int(self.settings.backoff_max * 1e6)
                await self.destinations.record(
                    destination_id, fields={"last_error": _error(message), "hold_until": hold}
                )
                return False
            keep = self._keeper(destination_id, owner, acquired)
            async with client:
                while True:
                    groups = await self._next_groups(destination)
                    if not groups:
                        return False
                    outcome = await self._deliver_groups(client, destination, groups, keep)
                    if outcome.failure is not None:
                        return False  # the destination failed: it holds back until the retry
                    if outcome.interrupted:
                        return False  # someone else has it now, or it was disabled
                    if time.monotonic() >= deadline:
                        return True
                    if not await self.destinations.leases.renew(
                        destination_id, owner, self.settings.lease, extra={"enabled": True}
                    ):
                        return True
        finally:
            await self.destinations.leases.release(destination_id, owner)

    def _keeper(
        self, destination_id: str, owner: str, acquired: float
    ) -> Callable[[], Awaitable[None]]:
        """Called before each request: renews the lease once a third of it has gone by (so a
        request may take up to two thirds of the lease); raises _LeaseLost when it is no longer
        ours or the destination was disabled."""
        lease = self.settings.lease
        renewed = acquired

        async def keep() -> None:
            nonlocal renewed
            if time.monotonic() - renewed < lease / 3:
                return
            if not await self.destinations.leases.renew(
                destination_id, owner, lease, extra={"enabled": True}
            ):
                raise _LeaseLost
            renewed = time.monotonic()

        return keep

    async def peer_config(self, doc: dict[str, Any]) -> PeerConfig:
        return peer_config(doc, await self.keys.box(), self.settings.timeout)

    async def _next_groups(self, destination: dict[str, Any]) -> list[dict[str, Any]]:
        size = self._batch_size(destination)
        rows = await self.deliveries.due(destination["_id"], now_micros(), limit=size)
        chosen: list[dict[str, Any]] = []
        total = 0
        for row in rows:
            if chosen and total + row["count"] > size:
                break
            chosen.append(row)
            total += row["count"]
        return chosen

    async def _deliver_groups(
        self,
        client: PeerClient,
        destination: dict[str, Any],
        groups: list[dict[str, Any]],
        keep: Callable[[], Awaitable[None]],
    ) -> _Outcome:
        """Send the statements of these groups and record every outcome durably."""
        store = destination["store"]
        # A statement may sit in two groups (a fan-out repeated with another grouping after a
        # crash): a batch carrying one id twice is refused as a whole by a conformant peer.
        ids = list(
            dict.fromkeys(statement_id for group in groups for statement_id in group["statements"])
        )
        docs = await self.statements.find_by_ids(store, ids)
        statements = [parse_stored(docs[i]["statement"]) for i in ids if i in docs]
        missing = {i for i in ids if i not in docs}
        if missing:  # cannot happen while statements are never deleted; do not retry forever
            log.warning("%d statements to forward no longer exist; skipped", len(missing))
        parts = await self._attachment_parts(store, statements)
        batch_size = self._batch_size(destination)
        outcome = await self._send(client, statements, parts, batch_size > 1, keep)
        outcome.delivered |= missing
        await self._record(destination, groups, outcome)
        return outcome

    async def _attachment_parts(
        self, store: str, statements: list[dict[str, Any]]
    ) -> dict[str, AttachmentPart]:
        """The stored data of the statements' attachments, by sha2 (those sent without
        fileUrl cannot be forwarded without it)."""
        try:
            sha2s = {
                a["sha2"].lower()
                for _, a in iter_attachments(statements)
                if isinstance(a.get("sha2"), str)
            }
        except AttachmentError:
            return {}
        if not sha2s:
            return {}
        docs = await self.statements.get_attachments(store, sha2s)
        return {
            doc["sha2"]: AttachmentPart(doc["sha2"], doc["content_type"], bytes(doc["data"]))
            for doc in docs
        }

    async def _send(
        self,
        client: PeerClient,
        statements: list[dict[str, Any]],
        parts: dict[str, AttachmentPart],
        batch: bool,
        keep: Callable[[], Awaitable[None]],
    ) -> _Outcome:
        outcome = _Outcome(delivered=set(), dead={})
        try:
            for version, run in await self._runs(client, statements):
                if batch and len(run) > 1:
                    await keep()
                    answer = await client.post_statements(run, parts_for(run, parts), version)
                    if answer.ok:
                        outcome.delivered.update(s["id"] for s in run)
                        continue
                    if answer.transient:
                        return self._failed(outcome, answer)
                    # Refused as a whole (one bad statement, a 409 for one already there, no
                    # arrays, too large): one by one, each with its own answer.
                for statement in run:
                    await keep()
                    answer = await client.put_statement(
                        statement, parts_for([statement], parts), version
                    )
                    if answer.ok:
                        outcome.delivered.add(statement["id"])
                    elif answer.status == 409:
                        await self._settle_conflict(client, statement, version, outcome)
                    elif answer.transient:
                        return self._failed(outcome, answer)
                    else:
                        outcome.dead[statement["id"]] = _answer_error(answer)
        except PeerRefused as exc:
            # The /about probe refused (e.g. 401/403): the same answer to a PUT makes a dead
            # letter at once, so every statement not resolved yet becomes one, with that answer.
            error = _error(str(exc), exc.status)
            for statement in statements:
                if statement["id"] not in outcome.delivered:
                    outcome.dead.setdefault(statement["id"], error)
        except PeerError as exc:
            outcome.failure = _error(str(exc), exc.status)
            outcome.retry_after = exc.retry_after
        except _LeaseLost:
            outcome.interrupted = True  # what is not resolved stays as it was
        return outcome

    @staticmethod
    def _failed(outcome: _Outcome, answer: PeerAnswer) -> _Outcome:
        outcome.failure = _answer_error(answer)
        outcome.retry_after = answer.retry_after
        return outcome

    async def _runs(
        self, client: PeerClient, statements: list[dict[str, Any]]
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Consecutive statements that go with the same X-Experience-API-Version header."""
        runs: list[tuple[str, list[dict[str, Any]]]] = []
        for statement in statements:
            version = await client.version_for(statement.get("version") or "1.0.0")
            if runs and runs[-1][0] == version:
                runs[-1][1].append(statement)
            else:
                runs.append((version, [statement]))
        return runs

    async def _settle_conflict(
        self, client: PeerClient, statement: dict[str, Any], version: str, outcome: _Outcome
    ) -> None:
        """409 to a PUT: delivered when the peer holds the same statement (an earlier delivery
        whose answer was lost), a dead letter when it holds a different one under this id."""
        answer = await client.get_statement(statement["id"], version)
        if answer.ok:
            try:
                held = json.loads(answer.body)
            except ValueError:
                held = None
            if isinstance(held, dict) and not statements_equivalent(
                held, statement, xapi_version=version
            ):
                outcome.dead[statement["id"]] = _error(
                    "409: the peer holds a different statement with this id", 409
                )
                return
        elif answer.transient:
            raise PeerError(
                f"GET statement after a 409: {answer.describe()}", answer.status, answer.retry_after
            )
        # Equivalent, or not readable with our credentials: the peer has this id; a conformant
        # peer only answers 409 when it already holds it.
        outcome.delivered.add(statement["id"])

    async def _record(
        self, destination: dict[str, Any], groups: list[dict[str, Any]], outcome: _Outcome
    ) -> None:
        now = now_micros()
        s = self.settings
        resolved = outcome.delivered | set(outcome.dead)
        letters = [
            self._letter(destination, statement_id, error, attempts=1)
            for statement_id, error in outcome.dead.items()
        ]
        finished: list[str] = []
        retried = 0
        exhausted = 0
        hold_until = 0
        if outcome.failure is not None:
            attempts = max(group["attempts"] for group in groups) + 1
            delay = backoff_delay(attempts, s.backoff_base, s.backoff_max, self.rng)
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, _MAX_RETRY_AFTER))
            hold_until = now + int(delay * 1e6)
        for group in groups:
            remaining = [i for i in group["statements"] if i not in resolved]
            if not remaining:
                finished.append(group["_id"])
                continue
            if outcome.failure is None:  # interrupted: not an attempt, nothing changes
                assert outcome.interrupted  # otherwise every statement is resolved
                if len(remaining) < len(group["statements"]):
                    await self.deliveries.reschedule(
                        group["_id"],
                        remaining,
                        group["attempts"],
                        group["next_attempt_key"],
                        group.get("last_error"),
                    )
                continue
            attempts = group["attempts"] + 1
            retried += len(remaining)
            if attempts >= s.max_attempts:
                exhausted += len(remaining)
                letters += [
                    self._letter(destination, i, outcome.failure, attempts) for i in remaining
                ]
                finished.append(group["_id"])
            else:
                await self.deliveries.reschedule(
                    group["_id"], remaining, attempts, hold_until, outcome.failure
                )
        # Dead letters first: a crash before the groups are removed means a repeated delivery,
        # never a statement that is in neither place.
        await self._bury(destination, letters)
        await self.deliveries.remove(finished)
        fields: dict[str, Any] = {}
        if outcome.delivered:
            fields["last_success_key"] = now
        if outcome.failure is not None:
            fields["last_error"] = outcome.failure
            fields["hold_until"] = hold_until
        elif outcome.dead:
            fields["last_error"] = next(iter(outcome.dead.values()))
        if not await self.destinations.record(
            destination["_id"],
            delivered=len(outcome.delivered),
            failed_attempts=retried,
            dead=len(letters),
            fields=fields,
        ):
            # Deleted while this batch was out: its delete dropped the rows before these.
            await self.deliveries.drop_destination(destination["_id"])
            return
        if outcome.failure is not None:
            log.info(
                "forwarding to %s failed (%s); %d statements retry in %.1fs%s",
                destination.get("name") or destination["_id"],
                outcome.failure["message"],
                retried - exhausted,
                (hold_until - now) / 1e6,
                f", {exhausted} dead after {s.max_attempts} attempts" if exhausted else "",
            )

    def _letter(
        self, destination: dict[str, Any], statement_id: str, error: dict[str, Any], attempts: int
    ) -> dict[str, Any]:
        return {
            "_id": f"{destination['_id']}:{statement_id}",
            "store": destination["store"],
            "destination": destination["_id"],
            "statement": statement_id,
            "attempts": attempts,
            "error": error,
            "dead_key": now_micros(),
        }

    async def _bury(self, destination: dict[str, Any], letters: list[dict[str, Any]]) -> None:
        if not letters:
            return
        # Dead letters list in `stored` order, like everything else.
        docs = await self.statements.routing_fields(
            destination["store"], [letter["statement"] for letter in letters]
        )
        stored = {doc["id"]: doc["stored_key"] for doc in docs}
        for letter in letters:
            letter["stored_key"] = stored.get(letter["statement"], 0)
        await self.deliveries.bury(letters)

    # --- operator actions --------------------------------------------------------------------

    async def replay(self, destination: dict[str, Any], statement_id: str | None = None) -> int:
        """Queue dead letters again (one, or all of the destination) as fresh deliveries, ahead
        of newer work since they are older, and lift the destination's hold."""
        letters = await self.deliveries.dead_for(destination["_id"], statement_id)
        if not letters:
            return 0
        size = self._batch_size(destination)
        now = now_micros()
        # Group ids of their own: a group an earlier replay of the same letters left behind
        # (a crash after burying its statements again) must not make these count as queued.
        # A replay repeated after a crash between the two steps below queues some twice.
        tag = f"replay-{now}-{uuid.uuid4().hex[:8]}:"
        rows = []
        for seq, start in enumerate(range(0, len(letters), size)):
            chunk = letters[start : start + size]
            chunk_ids = [letter["statement"] for letter in chunk]
            rows.append(
                {
                    "_id": group_id(destination["_id"], chunk_ids, tag=tag),
                    "store": destination["store"],
                    "destination": destination["_id"],
                    "statements": chunk_ids,
                    "count": len(chunk_ids),
                    "stored_key": chunk[0].get("stored_key", 0),
                    "seq": seq,
                    "attempts": 0,
                    "next_attempt_key": 0,
                    "created_key": now,
                    "last_error": None,
                }
            )
        await self.deliveries.add(rows)  # first: a crash in between repeats, never loses
        await self.deliveries.remove_dead([letter["_id"] for letter in letters])
        await self.retry_now(destination["_id"])
        return len(letters)

    async def retry_now(self, destination_id: str) -> None:
        """Lift the destination's hold and make every pending group due: what waited for its
        retry goes first, ahead of what was queued behind it."""
        await self.deliveries.make_due(destination_id)
        if not await self.destinations.record(destination_id, fields={"hold_until": 0}):
            await self.deliveries.drop_destination(destination_id)  # deleted meanwhile

    async def lag(self, destination: dict[str, Any]) -> dict[str, Any]:
        rows = await self.deliveries.pending(destination["_id"])
        dead = await self.deliveries.count_dead(destination["_id"])
        oldest = min((row["stored_key"] for row in rows), default=None)
        return {
            "pending": sum(row["count"] for row in rows),
            "oldest_pending_key": oldest,
            "dead": dead,
            # Dead-lettered so far, replayed or not (one that dies again counts again).
            "dead_letters_total": destination.get("dead_total", 0),
            "delivered": destination.get("delivered", 0),
            "retries": destination.get("retries", 0),
            "last_success_key": destination.get("last_success_key"),
            "last_error": destination.get("last_error"),
            "hold_until_key": destination.get("hold_until") or None,
        }


__all__ = ["Forwarder", "ForwardingSettings", "backoff_delay"]
