"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.body_guard import BodyGuardMiddleware
from api.hot_routes import install_hot_routes
from api.outbox_sweeper import sweep_periodically
from api.problem_openapi import document_problems
from api.problems import install_problem_handlers
from api.routes import a1111, blobs, events, health, jobs, openai_images, web, webhooks
from api.trace_middleware import TraceContextMiddleware
from api.wiring import Services, build_services
from dal.ports import ImageGenerator
from dal.settings import Settings
from dal.startup_heap import startup_objects_frozen
from dal.telemetry.http_middleware import RequestTelemetryMiddleware

DESCRIPTION = """
Generate images from text. Submit a job, poll it until it has `succeeded`, then download its
images through their signed URLs.

Authenticate with `Authorization: Bearer <API key>`. Errors are RFC 9457 `application/problem+json`
documents with a stable `code`.
"""


@asynccontextmanager
async def outbox_sweeping(services: Services) -> AsyncIterator[None]:
    """Run the sweep in the background while the app serves (OUTBOX_SWEEP_INTERVAL_S; 0
    disables it): publish what was never published, keep the line for the GPUs moving
    (dal.dispatcher), and hand over again the jobs whose
    message was lost or whose worker died (api/job_recovery.py). It only runs while the
    process does: see docs/operations.md."""
    interval = services.settings.outbox_sweep_interval_s
    if interval <= 0:
        yield
        return
    passes: list[Callable[[], object]] = [services.outbox.sweep, services.dispatcher.reconcile]
    if services.recovery is not None:
        passes.append(services.recovery.recover)
    task = asyncio.create_task(sweep_periodically(passes, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    generator: ImageGenerator | None = None,
    hot_routes: bool = True,
) -> FastAPI:
    """Build the app. Adapters are built in the lifespan (never at import); pass `services`
    to use ready-made ones (the caller then closes them), or `generator` to share a loaded
    model between apps. `hot_routes=False` leaves every request to FastAPI's routing (the
    tests compare the two: api/hot_routes.py)."""
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            async with outbox_sweeping(services):
                yield
            return
        # Loading the model and opening stores block: keep the event loop free meanwhile.
        built = await run_in_threadpool(build_services, settings, generator=generator)
        app.state.services = built
        try:
            with startup_objects_frozen():
                async with outbox_sweeping(built):
                    yield
        finally:
            await run_in_threadpool(built.close)

    app = FastAPI(
        title="txt2img",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        responses={},
        # Our own middleware makes the request spans and metrics (dal/telemetry): FastAPI's native
        # OpenTelemetry would add a second span per request under a global provider, and asks
        # whether one is configured on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=settings.max_body_bytes)
    # Inside the trace context (its span continues the request's trace), outside the rest.
    app.add_middleware(RequestTelemetryMiddleware)
    app.add_middleware(TraceContextMiddleware)
    install_problem_handlers(app)
    document_problems(app)
    # Starlette tries routes in order: the probes first, as they are asked most and cheapest.
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    app.include_router(blobs.router)
    openai_images.install(app)  # POST /v1/images/generations, GET /v1/models
    a1111.install(app)  # AUTOMATIC1111's /sdapi/v1: txt2img, models, progress, interrupt
    app.include_router(web.router)  # the web page at `/`
    if hot_routes:
        # Ahead of every route above: a job's submit, poll and download (api/hot_routes.py).
        install_hot_routes(app)
    return app
