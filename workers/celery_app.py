"""The Celery application. The broker is Redis (LRS_REDIS_URL); without one, tasks run eagerly
in-process (the embedded mode)."""

from __future__ import annotations

from celery import Celery

from lrs.config import get_settings

settings = get_settings()
app = Celery("lrs", broker=settings.redis_url or "memory://", include=["workers.tasks"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_always_eager=settings.redis_url is None,
    task_serializer="json",
    accept_content=["json"],
)
