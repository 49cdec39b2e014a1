"""Leave nothing behind in a shared Redis (issue 13).

The test Redis is shared (other checkouts, other people's runs), so each harness names what it
creates (its Celery queue, its store, its worker nodes) and removes exactly that when it stops:

- the queue's list and kombu's binding tables for it (`_kombu.binding.<exchange>` and
  `_kombu.binding_permanent.<exchange>` sets; a member names the queue it binds);
- the pidbox bindings of its workers (`_kombu.binding.celery.pidbox` members name the node),
  and the `_kombu.binding_deadlines` entry of a binding table that no longer exists;
- the outbox sweep's "recently enqueued" markers of its store (`lrs:outbox:enqueued:<kind>:
  <store>:<id>`, expiring only after LRS_OUTBOX_REQUEUE_AFTER).

`leftovers` is the check: after `forget`, nothing may still name them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lrs.progress.dispatch import MARKER_PREFIX

_BINDINGS = ("_kombu.binding.", "_kombu.binding_permanent.")
_DEADLINES = "_kombu.binding_deadlines"


def _client(redis_url: str) -> Any:
    import redis

    return redis.Redis.from_url(redis_url, socket_connect_timeout=2)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _marker_keys(client: Any, stores: Iterable[str]) -> list[bytes]:
    keys: list[bytes] = []
    for store in stores:
        keys += client.scan_iter(match=f"{MARKER_PREFIX}*:{_escape(store)}:*", count=1000)
    return keys


def _members_naming(client: Any, names: tuple[str, ...]) -> list[tuple[bytes, bytes]]:
    found = []
    for prefix in _BINDINGS:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            for member in client.smembers(key):
                text = member.decode("latin-1")
                if any(name in text for name in names):
                    found.append((key, member))
    return found


def forget(
    redis_url: str,
    *,
    queues: Iterable[str] = (),
    stores: Iterable[str] = (),
    nodes: Iterable[str] = (),
) -> None:
    """Remove what a harness created for these queues, stores and worker nodes."""
    queues, stores, nodes = tuple(queues), tuple(stores), tuple(nodes)
    client = _client(redis_url)
    try:
        for queue in queues:
            client.delete(queue, *(prefix + queue for prefix in _BINDINGS))
        for key, member in _members_naming(client, queues + nodes):
            client.srem(key, member)
        # A deadline for a binding table that is gone keeps nothing alive: kombu's own sweep
        # would drop it once overdue, if any consumer ever ran one again.
        for exchange in client.zrange(_DEADLINES, 0, -1):
            if not client.exists(b"_kombu.binding." + exchange):
                client.zrem(_DEADLINES, exchange)
        markers = _marker_keys(client, stores)
        if markers:
            client.delete(*markers)
    finally:
        client.close()


def leftovers(
    redis_url: str,
    *,
    queues: Iterable[str] = (),
    stores: Iterable[str] = (),
    nodes: Iterable[str] = (),
) -> list[str]:
    """Keys, and binding members, that still name one of these queues, stores or nodes."""
    queues, stores, nodes = tuple(queues), tuple(stores), tuple(nodes)
    client = _client(redis_url)
    try:
        found = [
            key.decode("latin-1")
            for queue in queues
            for key in client.scan_iter(match=f"*{_escape(queue)}*", count=1000)
        ]
        found += [
            f"{key.decode('latin-1')} member {member!r}"
            for key, member in _members_naming(client, queues + nodes)
        ]
        found += [key.decode("latin-1") for key in _marker_keys(client, stores)]
        return found
    finally:
        client.close()


def forget_and_check(redis_url: str, **names: Iterable[str]) -> None:
    frozen = {kind: tuple(values) for kind, values in names.items()}
    forget(redis_url, **frozen)
    remaining = leftovers(redis_url, **frozen)
    assert not remaining, f"left behind in Redis: {remaining}"
