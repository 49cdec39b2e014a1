"""Errors as the xAPI clients expect them: a status, a JSON body naming the problem, and the
xAPI headers (added by the version middleware)."""

from __future__ import annotations


class XAPIError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> XAPIError:
    return XAPIError(400, message)


def not_found(message: str = "not found") -> XAPIError:
    return XAPIError(404, message)
