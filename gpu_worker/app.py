"""The worker's HTTP face: the Pub/Sub push endpoints and health probes. Never public."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dal.errors import MalformedMessage, PushUnauthorized, StoreUnavailable
from dal.health import run_checks
from dal.ports import ImageGenerator
from dal.pubsub.message import JobMessage
from dal.settings import Settings
from dal.startup_heap import startup_objects_frozen
from dal.telemetry import METRICS_CONTENT_TYPE, job_context, metrics_text, scrape_allowed
from dal.telemetry.http_middleware import RequestTelemetryMiddleware
from dal.trace_context import set_traceparent
from gpu_worker.push_envelope import parse_push_body
from gpu_worker.wiring import WorkerServices, build_worker_services

log = logging.getLogger(__name__)

# Pub/Sub acknowledges on 102, 200, 201, 202 and 204; anything else is redelivered later.
ACK = 204
RETRY_LATER = 503


def create_worker_app(
    settings: Settings | None = None,
    *,
    services: WorkerServices | None = None,
    generator: ImageGenerator | None = None,
    pull: bool = False,
) -> FastAPI:
    """`pull=True` also starts a Pub/Sub pull loop on the jobs subscription (GKE, VMs)."""
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        # Loads and warms the model before the first request: /readyz is true only after.
        built = await run_in_threadpool(build_worker_services, settings, generator=generator)
        app.state.services = built
        puller = _start_pull_worker(built) if pull else None
        try:
            with startup_objects_frozen():
                yield
        finally:
            if puller is not None:
                await run_in_threadpool(puller.stop)
            await run_in_threadpool(built.close)

    app = FastAPI(title="txt2img worker", version="1.0.0", lifespan=lifespan, docs_url=None)
    app.add_middleware(RequestTelemetryMiddleware)

    @app.post("/pubsub/push", status_code=ACK)
    async def push(request: Request) -> Response:
        delivery = await _delivery(request, "push")
        if isinstance(delivery, Response):
            return delivery
        worker, message, job_id = delivery
        with job_context(job_id):
            outcome = await run_in_threadpool(worker.run_job, job_id)
            log.info(
                "push message %s for job %s (delivery %s): %s",
                message.message_id,
                job_id,
                message.delivery_attempt or "?",
                outcome.value,
            )
        return Response(status_code=ACK if outcome.acknowledge else RETRY_LATER)

    @app.post("/pubsub/dead-letter", status_code=ACK)
    async def dead_letter(request: Request) -> Response:
        """Pushed from the dead-letter topic: the jobs topic gave up on this message."""
        delivery = await _delivery(request, "dead-letter")
        if isinstance(delivery, Response):
            return delivery
        worker, message, job_id = delivery
        detail = message.dead_letter_detail()
        with job_context(job_id):
            try:
                job = await run_in_threadpool(worker.finisher.dead_letter, job_id, detail)
            except StoreUnavailable:
                return Response(status_code=RETRY_LATER)
            log.warning("job %s dead-lettered (%s): %s", job_id, detail, bool(job))
        return Response(status_code=ACK)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics(request: Request) -> Response:
        """Prometheus: the runner's, the batcher's and the model's series, and requests."""
        if not scrape_allowed(request.headers.get("authorization"), settings.metrics_bearer_token):
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/readyz")
    def readyz(request: Request) -> Any:
        worker: WorkerServices = request.app.state.services
        checks = run_checks(worker.readiness_checks)
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "failing", "checks": checks},
            status_code=200 if healthy else 503,
        )

    return app


async def _delivery(
    request: Request, endpoint: str
) -> tuple[WorkerServices, JobMessage, str] | Response:
    """The worker and the job of an authenticated push, in the job's trace; or the answer
    to give at once: 401 (not our subscription), 400 (not a push body), or an acknowledgement
    of a message that names no job (retrying cannot make it readable, so it must not loop)."""
    worker: WorkerServices = request.app.state.services
    try:
        worker.push_auth.verify(request.headers.get("authorization"))
    except PushUnauthorized as exc:
        log.warning("push request refused: %s", exc)
        return JSONResponse({"detail": "unauthorized"}, status_code=401)
    try:
        message = parse_push_body(await request.body())
    except MalformedMessage as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    if message.job_id is None:
        log.error(
            "%s message %s names no job; acknowledged and dropped", endpoint, message.message_id
        )
        return Response(status_code=ACK)
    # The job's trace, from the API request that published it.
    set_traceparent(message.traceparent)
    return worker, message, message.job_id


def _start_pull_worker(services: WorkerServices) -> Any:
    from dal.pubsub.client import make_subscriber, subscription_path
    from gpu_worker.pull import PullWorker

    settings = services.settings
    project = settings.gcp_project
    puller = PullWorker(
        services,
        subscriber=make_subscriber(),
        jobs_subscription=subscription_path(project, settings.pubsub_jobs_subscription),
        dead_letter_subscription=subscription_path(
            project, settings.pubsub_dead_letter_recorder_subscription
        ),
        max_in_flight=settings.pull_max_in_flight,
        shutdown_grace_s=settings.shutdown_grace_s,
    )
    puller.start()
    return puller
