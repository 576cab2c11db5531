"""Builds a process's webhook dispatcher from settings (called by dal.core.build_core)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from dal.job_view import webhook_body_renderer
from dal.ports import BlobStore, JobStore
from dal.settings import Settings
from dal.webhooks.dispatcher import RedriveConfig, WebhookDispatcher
from dal.webhooks.retry import RetryPolicy
from dal.webhooks.sender import HttpxSender, WebhookSender
from dal.webhooks.signing import owner_secret
from dal.webhooks.urls import WebhookUrlPolicy


def url_policy(settings: Settings) -> WebhookUrlPolicy:
    return WebhookUrlPolicy(
        settings.webhook_targets or "public",
        allowed_networks=settings.webhook_allowed_network_list,
    )


def build_webhook_dispatcher(
    settings: Settings,
    *,
    jobs: JobStore,
    blobs: BlobStore,
    closers: list[Callable[[], None]],
    sender: WebhookSender | None = None,
) -> WebhookDispatcher:
    """Started (delivery threads and the redrive), and closed by `closers`. The body is the
    job's public view (dal.job_view), as GET /v1/jobs/{id} shows it."""
    render = webhook_body_renderer(
        blobs,
        timedelta(seconds=settings.signed_url_ttl_s),
        # No request to take an origin from: API-served image URLs are absolute only with
        # PUBLIC_BASE_URL (the signer adds it); GCS URLs always are.
        base_url="",
    )
    retry = RetryPolicy(
        max_attempts=settings.webhook_max_attempts,
        base_s=settings.webhook_backoff_base_s,
        max_s=settings.webhook_backoff_max_s,
    )
    dispatcher = WebhookDispatcher(
        jobs=jobs,
        sender=sender or HttpxSender(timeout_s=settings.webhook_timeout_s),
        render=render,
        secret_for=partial(owner_secret, settings.resolved_webhook_signing_secret),
        urls=url_policy(settings),
        retry=retry,
        redrive=RedriveConfig(
            interval_s=settings.webhook_redrive_interval_s,
            window_s=settings.webhook_redrive_window_s,
            # Longer than a live process's longest wait between two attempts, plus the
            # attempt itself: what is older was dropped by a process that stopped.
            grace_s=settings.webhook_backoff_max_s + 2 * settings.webhook_timeout_s + 30,
        ),
        workers=settings.webhook_workers,
    )
    dispatcher.start()
    closers.append(lambda: dispatcher.close(timeout=settings.webhook_timeout_s + 1))
    return dispatcher
