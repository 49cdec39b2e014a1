"""GET /xapi/about: versions and extensions (no authentication, as the spec allows)."""

from __future__ import annotations

from fastapi import APIRouter

from lrs import __version__
from lrs.api.middleware import SUPPORTED_VERSIONS

router = APIRouter()


@router.get("/xapi/about")
async def about() -> dict[str, object]:
    return {
        "version": list(SUPPORTED_VERSIONS),
        "extensions": {"urn:x-lrs:product": {"name": "lrs", "version": __version__}},
    }
