"""Celery tasks. Progress derivation and forwarding arrive with their issues."""
