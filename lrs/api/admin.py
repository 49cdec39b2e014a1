"""Administration: erasing a learner (scope `admin`)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from lrs.api import openapi
from lrs.api.errors import bad_request
from lrs.api.learners import learner_key_of
from lrs.api.paths import parse_json_body
from lrs.auth import current_credential, require_scope
from lrs.services import Services
from lrs.storage.credentials import Credential
from lrs.storage.erasure import erase_learner

router = APIRouter()


class ErasureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learner: dict[str, Any] | str
    # Safe by default: a request must say dry_run=false to delete anything.
    dry_run: bool = True


@router.post(
    "/admin/erasure",
    tags=["admin"],
    summary="Count, or erase, a learner's statements, documents and progress",
    **openapi.operation(
        scopes=["admin"],
        body=openapi.json_body(openapi.model_schema(ErasureRequest)),
        ok=openapi.response(
            "What was (or, in a dry run, would be) erased, per kind",
            {
                "type": "object",
                "properties": {
                    "learner": openapi.STRING,
                    "dry_run": {"type": "boolean"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
                "required": ["learner", "dry_run", "counts"],
            },
        ),
        errors=(400, 401, 403, 413),
    ),
)
async def erase(
    request: Request, credential: Credential = Depends(current_credential)
) -> JSONResponse:
    """Count (dry run, the default) or erase a learner's statements, documents and progress in
    the caller's store."""
    require_scope(credential, "admin")
    data = parse_json_body(await request.body(), "the erasure request")
    try:
        body = ErasureRequest.model_validate(data)
    except ValidationError as exc:
        raise bad_request(f"erasure request: {exc.errors()[0]['msg']}") from exc
    raw = body.learner if isinstance(body.learner, str) else json.dumps(body.learner)
    learner = learner_key_of(raw)
    services: Services = request.app.state.services
    counts = await erase_learner(services.database, credential.store, learner, dry_run=body.dry_run)
    return JSONResponse({"learner": learner, "dry_run": body.dry_run, "counts": counts})
