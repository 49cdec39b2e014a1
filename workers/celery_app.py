"""The Celery application. The broker is Redis (LRS_REDIS_URL)."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from lrs.broker import FEDERATION_SWEEP, SWEEP_UNDERIVED, broker_url, celery_app
from lrs.config import get_settings

__all__ = ["app", "broker_url"]

settings = get_settings()
# The core's app (lrs.broker): the API sends tasks on it by name, the workers register them.
app = celery_app()
app.conf.include = ["workers.tasks", "workers.federation_tasks"]
app.conf.update(
    beat_schedule_filename=str(settings.beat_schedule),
    beat_schedule={
        "sweep-underived": {"task": SWEEP_UNDERIVED, "schedule": settings.sweep_interval},
        # Federation: fan-outs left behind, deliveries whose retry is due, sources to poll.
        "federation-sweep": {"task": FEDERATION_SWEEP, "schedule": settings.federation_interval},
    },
)


@worker_ready.connect
def _sweep_on_start(**_: object) -> None:
    """A worker that (re)starts first re-enqueues what was stored while no worker ran."""
    from workers.tasks import sweep_underived

    sweep_underived.delay()


_heartbeat_stop: Any = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: object) -> None:
    global _heartbeat_stop
    from workers import heartbeat

    name = getattr(sender, "hostname", None) or "worker"
    _heartbeat_stop = heartbeat.start(name)


@worker_shutdown.connect
def _stop_heartbeat(**_: object) -> None:
    if _heartbeat_stop is not None:
        _heartbeat_stop.set()
