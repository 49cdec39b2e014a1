"""Request parameters: single-valued query parameters, and path segments that hold IRIs.

Path segments that hold IRIs. Clients URL-encode them (`/` as %2F); routing sees the decoded
path, where an IRI's slashes are indistinguishable from the path's own, so these routes read
the raw path and decode each segment themselves."""

from __future__ import annotations

from urllib.parse import unquote

from fastapi import Request

from lrs.api.errors import bad_request, not_found


def single_params(request: Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query parameters as a dict; 400 for a repeated or unknown one."""
    items = request.query_params.multi_items()
    params = dict(items)
    if len(params) != len(items):
        raise bad_request("a query parameter is repeated")
    unknown = set(params) - allowed
    if unknown:
        raise bad_request(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return params


def raw_segments(request: Request, prefix: str) -> list[str]:
    """The decoded segments after `prefix` (e.g. "/courses/"), split on the raw slashes."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.decode("latin-1").split("?", 1)[0]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith(prefix):
        raise not_found()
    rest = path[len(prefix) :]
    return [unquote(segment) for segment in rest.split("/")] if rest else []
