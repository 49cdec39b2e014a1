"""X-Experience-API-Consistent-Through (Communication 2.1.3.s2.b5): the time before which every
statement that has or will have a `stored` value is available for retrieval.

The one place its value is computed; the version middleware puts it on every response of the
Statements resource (errors included), taken before the query for GETs.
"""

from __future__ import annotations

from lrs.services import Services
from lrs.xapi.timestamps import format_micros


async def consistent_through(services: Services) -> str:
    """Truthful across processes (see StatementRepository.consistent_through), provided it is
    taken before the read the response answers."""
    return format_micros(await services.statements.consistent_through())
