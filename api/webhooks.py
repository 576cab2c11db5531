"""A process's webhook dispatcher, with the API's job view as the body. Built by the API's
wiring (owner cancels; every end on the embedded profile) and by the worker's (the jobs it
ends); the worker imports this module, never the API's routes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from api.job_views import webhook_body_renderer
from dal.ports import BlobStore, JobStore
from dal.settings import Settings
from dal.webhooks.dispatcher import WebhookDispatcher
from dal.webhooks.factory import build_webhook_dispatcher
from dal.webhooks.sender import WebhookSender


def build_webhooks(
    settings: Settings,
    *,
    jobs: JobStore,
    blobs: BlobStore,
    closers: list[Callable[[], None]],
    sender: WebhookSender | None = None,
) -> WebhookDispatcher:
    render = webhook_body_renderer(
        blobs,
        timedelta(seconds=settings.signed_url_ttl_s),
        # No request to take an origin from: API-served image URLs are absolute only with
        # PUBLIC_BASE_URL (the signer adds it); GCS URLs always are.
        base_url="",
    )
    return build_webhook_dispatcher(
        settings, jobs=jobs, render=render, closers=closers, sender=sender
    )
