"""Credentials administration over HTTP (scope `admin`): create (the secret is answered once),
list (never secrets), revoke.

The rule: an admin credential manages the credentials of its own store only. A store is a
tenant, and an `admin` of one tenant must not mint credentials that read another's data. The
first credential of a new store is made by the operator with `lrs credentials create --store
...` (the CLI shares this implementation, lrs.credential_admin, and reaches every store).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from lrs.api import openapi
from lrs.api.errors import XAPIError, bad_request, not_found
from lrs.api.paths import parse_json_body
from lrs.auth import current_credential, require_scope
from lrs.credential_admin import (
    CredentialRequestError,
    create_credential,
    credential_json,
    list_credentials,
    revoke_credential,
)
from lrs.storage.credentials import Credential, CredentialRepository

router = APIRouter()


class CredentialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scopes: list[str] | str
    name: str = ""
    # Optional; when given it must be the caller's own store.
    store: str | None = None


_CREDENTIAL = {
    "type": "object",
    "properties": {
        "key": openapi.STRING,
        "store": openapi.STRING,
        "scopes": {"type": "array", "items": openapi.STRING},
        "name": openapi.STRING,
        "created": openapi.STRING,
        "revoked": {"type": "boolean"},
    },
}
_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The credential's key",
    "schema": openapi.STRING,
}


async def _admin(credential: Credential = Depends(current_credential)) -> Credential:
    require_scope(credential, "admin")
    return credential


def _repository(request: Request) -> CredentialRepository:
    return request.app.state.services.credentials


@router.post(
    "/admin/credentials",
    tags=["admin"],
    summary="Create a credential in the caller's store (the secret is answered once)",
    **openapi.operation(
        scopes=["admin"],
        status=201,
        body=openapi.json_body(openapi.model_schema(CredentialIn)),
        ok=openapi.response(
            "Created",
            {**_CREDENTIAL, "properties": {**_CREDENTIAL["properties"], "secret": openapi.STRING}},
        ),
    ),
)
async def create(request: Request, credential: Credential = Depends(_admin)) -> JSONResponse:
    data = parse_json_body(await request.body(), "the request body")
    try:
        body = CredentialIn.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise bad_request(f"{where}: {error['msg']}" if where else error["msg"]) from exc
    if body.store is not None and body.store != credential.store:
        raise XAPIError(
            403,
            f"an admin credential manages the credentials of its own store ({credential.store}) "
            "only; create the first credential of another store with `lrs credentials create`",
        )
    try:
        created, secret = await create_credential(
            _repository(request), credential.store, body.scopes, body.name
        )
    except CredentialRequestError as exc:
        raise bad_request(str(exc)) from exc
    # The secret is in this answer only: it is never stored, nor shown again.
    return JSONResponse(
        {**credential_json(created), "secret": secret},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/admin/credentials",
    tags=["admin"],
    summary="List the credentials of the caller's store (never their secrets)",
    **openapi.operation(
        scopes=["admin"],
        ok=openapi.response(
            "The credentials",
            {
                "type": "object",
                "properties": {"credentials": {"type": "array", "items": _CREDENTIAL}},
            },
        ),
    ),
)
async def list_all(request: Request, credential: Credential = Depends(_admin)) -> JSONResponse:
    credentials = await list_credentials(_repository(request), credential.store)
    return JSONResponse({"credentials": [credential_json(c) for c in credentials]})


async def _revoke(request: Request, credential: Credential, key: str) -> None:
    # Another store's key is answered like an unknown one: its existence is not disclosed.
    if not await revoke_credential(_repository(request), key, credential.store):
        raise not_found(f"no credential {key} in this store")


@router.delete(
    "/admin/credentials/{key}",
    tags=["admin"],
    summary="Revoke a credential of the caller's store",
    **openapi.operation(
        scopes=["admin"],
        status=204,
        parameters=[_KEY],
        ok=openapi.response("Revoked"),
        errors=(400, 401, 403, 404),
    ),
)
async def delete(key: str, request: Request, credential: Credential = Depends(_admin)) -> Response:
    """Revoke (credentials are kept, revoked, so that statements keep a known authority)."""
    await _revoke(request, credential, key)
    return Response(status_code=204)


@router.post(
    "/admin/credentials/{key}/revoke",
    tags=["admin"],
    summary="Revoke a credential of the caller's store; answers it, revoked",
    **openapi.operation(
        scopes=["admin"],
        parameters=[_KEY],
        ok=openapi.response("Revoked", _CREDENTIAL),
        errors=(400, 401, 403, 404),
    ),
)
async def revoke(
    key: str, request: Request, credential: Credential = Depends(_admin)
) -> JSONResponse:
    await _revoke(request, credential, key)
    found = await _repository(request).lookup(key)
    assert found is not None
    return JSONResponse(credential_json(found[0]))
