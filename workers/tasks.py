"""Celery tasks. Each is idempotent (it recomputes from stored statements), acknowledged late,
and retried on failure; whatever still fails stays `derived: false` for the sweep."""

from __future__ import annotations

import logging

from lrs.progress.deriver import VersionConflict
from workers.celery_app import app
from workers.runtime import run

log = logging.getLogger("workers")


@app.task(
    name="lrs.derive_statements",
    bind=True,
    acks_late=True,
    max_retries=10,
    default_retry_delay=1,
)
def derive_statements(self, store: str, ids: list[str], entries: list[str] | None = None) -> int:  # noqa: ANN001
    """Derive progress for newly stored statements (and, in the same round, others still owed
    in the store: Deriver.derive_owed), then clear their outbox entries."""
    try:
        return run(lambda services: services.deriver.derive_owed(store, ids, entries or []))
    except VersionConflict as exc:
        raise self.retry(exc=exc) from exc


@app.task(name="lrs.derive_course", acks_late=True)
def derive_course(store: str, course_id: str) -> int:
    """Re-derive a course after a catalogue change."""
    return run(lambda services: services.deriver.derive_course(store, course_id))


@app.task(name="lrs.resummarize", acks_late=True)
def resummarize(store: str, course_id: str, module_id: str) -> int:
    """A discovered module grew: summarize its learners' records against its new size."""
    return run(lambda services: services.deriver.resummarize(store, course_id, module_id))


@app.task(name="lrs.sweep_underived", acks_late=True)
def sweep_underived() -> int:
    """Re-enqueue statements still underived after the grace period (the outbox sweep)."""
    from lrs.broker import DirectPublisher
    from lrs.progress.dispatch import CeleryDispatcher

    def sweep(services):  # noqa: ANN001, ANN202
        settings = services.settings
        dispatcher = CeleryDispatcher(
            services.statements.outbox,
            services.catalogue,
            grace=settings.outbox_grace,
            # Shared with the API's sweeps through Redis: a statement one of them enqueued
            # is not enqueued again by another within the period.
            redis_url=settings.redis_url,
            requeue_after=settings.outbox_requeue_after,
            queue_cap=settings.outbox_queue_cap,
            publisher=DirectPublisher(),
            recover=services.statements.recover_batches,
        )
        return dispatcher.sweep()

    return run(sweep)
