"""The Celery application. The broker is Redis (LRS_REDIS_URL)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from lrs.config import get_settings


def broker_url(redis_url: str | None) -> str:
    """Kombu names a Redis unix socket `redis+socket://`; redis-py (and LRS_REDIS_URL) `unix://`."""
    if not redis_url:
        return "memory://"
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


settings = get_settings()
app = Celery(
    "lrs",
    broker=broker_url(settings.redis_url),
    include=["workers.tasks", "workers.federation_tasks"],
)
app.conf.update(
    task_acks_late=True,
    # A task whose worker died is redelivered, not dropped.
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=4,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # Never let an API request hang on a broker that is down: publish fails fast, the outbox
    # sweep re-enqueues later.
    broker_transport_options={"socket_connect_timeout": 1, "socket_timeout": 2},
    task_publish_retry=False,
    # Every task goes to this LRS's queue, which `lrs worker` consumes (by default, the
    # worker takes the default queue): several LRSs can share a broker.
    task_default_queue=settings.celery_queue,
    beat_schedule_filename=str(settings.beat_schedule),
    beat_schedule={
        "sweep-underived": {
            "task": "lrs.sweep_underived",
            "schedule": settings.sweep_interval,
        },
        # Federation: fan-outs left behind, deliveries whose retry is due, sources to poll.
        "federation-sweep": {
            "task": "lrs.federation.sweep",
            "schedule": settings.federation_interval,
        },
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
