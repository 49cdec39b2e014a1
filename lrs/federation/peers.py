"""A peer as stored: endpoint, version and credentials, the secret parts encrypted.

Destinations and sources both keep one. The password and the extra headers (which may carry
tokens) are stored encrypted and never returned by the API: it shows whether a password is set
and the names of the headers only.
"""

from __future__ import annotations

import json
from typing import Any

from lrs.federation.client import PeerConfig
from lrs.federation.secrets import SecretBox

HIDDEN = "(hidden)"


def encrypt_peer_fields(
    box: SecretBox, password: str | None, headers: dict[str, str] | None
) -> dict[str, Any]:
    """The stored form of the secret fields given (None: leave unset)."""
    fields: dict[str, Any] = {}
    if password is not None:
        fields["password"] = box.encrypt(password) if password else None
    if headers is not None:
        fields["headers"] = box.encrypt(json.dumps(headers)) if headers else None
        fields["header_names"] = sorted(headers)
    return fields


def peer_config(doc: dict[str, Any], box: SecretBox, timeout: float) -> PeerConfig:
    return PeerConfig(
        endpoint=doc["endpoint"],
        username=doc.get("username"),
        password=box.decrypt(doc["password"]) if doc.get("password") else None,
        version=doc.get("version") or "auto",
        headers=json.loads(box.decrypt(doc["headers"])) if doc.get("headers") else {},
        timeout=timeout,
    )


def public_peer_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What the admin API shows of a stored peer."""
    return {
        "endpoint": doc["endpoint"],
        "username": doc.get("username"),
        "password_set": bool(doc.get("password")),
        "version": doc.get("version") or "auto",
        "headers": {name: HIDDEN for name in doc.get("header_names") or []},
    }
