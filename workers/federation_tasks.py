"""Celery tasks of federation (lrs.federation). Each is safe to run twice or concurrently: the
durable state (outbox marker, delivery groups, checkpoints) is in the database, and deliveries
and polls run under a lease. None uses Celery's own retries: a failed delivery is rescheduled in
the database, and the sweep (beat) enqueues it when it is due, so a Redis restart loses nothing.
"""

from __future__ import annotations

import logging

from workers.celery_app import app
from workers.runtime import run

log = logging.getLogger("workers.federation")


def _enqueue(task_name: str, *args: object) -> None:
    try:
        app.tasks[task_name].apply_async(args=list(args), retry=False)
    except Exception as exc:  # the database says what is due: the next sweep enqueues it
        log.warning("could not enqueue %s%r: %s", task_name, args, exc)


@app.task(name="lrs.federation.fan_out", acks_late=True)
def fan_out(store: str, ids: list[str], entries: list[str] | None = None) -> int:
    """Turn newly stored statements into delivery groups (clearing their outbox entries), then
    start delivering them."""
    touched = run(lambda services: services.federation.forwarder.fan_out(store, ids, entries or []))
    for destination_id in touched:
        _enqueue("lrs.federation.deliver", destination_id)
    return len(touched)


@app.task(name="lrs.federation.deliver", acks_late=True)
def deliver(destination_id: str) -> bool:
    """One delivery pass (bounded in time); queues the next pass while work is due."""
    more = run(lambda services: services.federation.forwarder.deliver(destination_id))
    if more:
        _enqueue("lrs.federation.deliver", destination_id)
    return more


@app.task(name="lrs.federation.pull", acks_late=True)
def pull(source_id: str) -> int:
    """One poll of a source; queues the next one at once when it stopped early."""
    report = run(lambda services: services.federation.puller.pull(source_id))
    if report is not None and report.more:
        _enqueue("lrs.federation.pull", source_id)
    return report.stored if report is not None else 0


@app.task(name="lrs.federation.sweep", acks_late=True)
def sweep() -> int:
    """Fan out what the API could not hand over, enqueue due deliveries and polls (beat)."""
    from lrs.broker import DirectPublisher
    from lrs.federation.dispatch import CeleryFederation

    def sweep_all(services):  # noqa: ANN001, ANN202
        settings = services.settings
        # A worker always sends tasks, and sends them from here (no background publisher).
        driver = CeleryFederation(
            services.federation,
            settings.federation_interval,
            settings.outbox_grace,
            publisher=DirectPublisher(),
        )
        return driver.sweep()

    return run(sweep_all)
