"""X-Experience-API-Consistent-Through (Communication 2.1.3.s2.b5): the time before which every
statement that has or will have a `stored` value is available for retrieval.

The one place its value is computed; the version middleware puts it on every response of the
Statements resource (errors included), taken before the query for GETs. A write on the embedded
store already knows it (its own stored key, `set_consistent_through`): one store read fewer per
POST and PUT.
"""

from __future__ import annotations

from fastapi import Request

from lrs.api.middleware import KNOWN_CONSISTENT_THROUGH
from lrs.services import Services
from lrs.xapi.timestamps import format_micros


async def consistent_through(services: Services) -> str:
    """Truthful across processes (see StatementRepository.consistent_through), provided it is
    taken before the read the response answers."""
    return format_micros(await services.statements.consistent_through())


def set_consistent_through(request: Request, micros: int) -> None:
    """The value a handler knows to be truthful once its response is sent (a write's own
    stored key, see StatementRepository.consistent_through_after): the middleware uses it
    instead of reading the store again."""
    setattr(request.state, KNOWN_CONSISTENT_THROUGH, format_micros(micros))
