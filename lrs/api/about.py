"""GET /xapi/about: versions and extensions (no authentication, as the spec allows)."""

from __future__ import annotations

from fastapi import APIRouter

from lrs import __version__
from lrs.api import openapi
from lrs.api.middleware import SUPPORTED_VERSIONS

router = APIRouter()


@router.get(
    "/xapi/about",
    tags=["xapi"],
    summary="The xAPI versions this LRS supports (no authentication)",
    **openapi.operation(
        scopes=None,
        ok=openapi.response(
            "Versions and extensions",
            {
                "type": "object",
                "properties": {
                    "version": {"type": "array", "items": openapi.STRING},
                    "extensions": {"type": "object"},
                },
                "required": ["version"],
            },
            headers=openapi.RESPONSE_VERSION_HEADER,
        ),
        errors=(),
    ),
)
async def about() -> dict[str, object]:
    return {
        "version": list(SUPPORTED_VERSIONS),
        "extensions": {"urn:x-lrs:product": {"name": "lrs", "version": __version__}},
    }
