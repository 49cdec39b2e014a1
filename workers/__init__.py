"""Celery workers: derive progress and forward statements (see workers.celery_app)."""

from workers.celery_app import app

__all__ = ["app"]
