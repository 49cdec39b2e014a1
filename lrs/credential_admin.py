"""Managing credentials: create, list, revoke. One implementation for the CLI (`lrs credentials
...`, run by an operator with access to the store: any store) and the admin HTTP API
(`/admin/credentials`, scope `admin`: the caller's own store only, see lrs.api.credentials).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lrs.auth import KNOWN_SCOPES
from lrs.storage.credentials import Credential, CredentialRepository

MAX_NAME_LENGTH = 200
MAX_STORE_LENGTH = 200


class CredentialRequestError(ValueError):
    """The request cannot be carried out as asked; the message says why."""


def parse_scopes(scopes: str | Iterable[str]) -> list[str]:
    """Scopes from a comma (or space) separated string or a list; each must be known."""
    items = scopes.replace(" ", ",").split(",") if isinstance(scopes, str) else list(scopes)
    if not all(isinstance(item, str) for item in items):
        raise CredentialRequestError("scopes must be strings")
    parsed = sorted({item.strip() for item in items if item.strip()})
    unknown = [scope for scope in parsed if scope not in KNOWN_SCOPES]
    if unknown:
        raise CredentialRequestError(
            f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}"
        )
    if not parsed:
        raise CredentialRequestError("at least one scope is required")
    return parsed


def _check_text(value: str, what: str, most: int, *, required: bool) -> str:
    if required and not value:
        raise CredentialRequestError(f"{what} is required")
    if len(value) > most or not value.isprintable():
        raise CredentialRequestError(f"{what} must be printable text of at most {most} characters")
    return value


async def create_credential(
    repository: CredentialRepository, store: str, scopes: str | Iterable[str], name: str = ""
) -> tuple[Credential, str]:
    """A new credential in `store`; returns it with its secret, which is never stored (only its
    hash is) and cannot be shown again."""
    _check_text(store, "store", MAX_STORE_LENGTH, required=True)
    _check_text(name, "name", MAX_NAME_LENGTH, required=False)
    return await repository.create(store, parse_scopes(scopes), name)


async def list_credentials(
    repository: CredentialRepository, store: str | None = None
) -> list[Credential]:
    """The credentials of `store` (every store when None), never their secrets."""
    return await repository.list(store)


async def revoke_credential(
    repository: CredentialRepository, key: str, store: str | None = None
) -> bool:
    """Revoke a credential (only one of `store`, when given); False if there is none. Takes
    effect at once in every API process."""
    return await repository.revoke(key, store)


def credential_json(credential: Credential) -> dict[str, Any]:
    """What may be shown of a credential: everything but its secret."""
    return {
        "key": credential.key,
        "store": credential.store,
        "scopes": sorted(credential.scopes),
        "name": credential.name,
        "created": credential.created or None,
        "revoked": credential.revoked,
    }
