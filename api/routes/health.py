from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.problems import PROBLEM_TYPES, ProblemError
from api.schemas import HealthOut
from dal.health import run_checks
from dal.telemetry import METRICS_CONTENT_TYPE, metrics_text, scrape_allowed

router = APIRouter(tags=["operations"])


# The liveness probe's answer never changes: serialized once. The route is async (no
# threadpool hop) and skips response validation; its schema stays documented.
_HEALTHY = HealthOut(status="ok").model_dump_json().encode()


@router.get(
    "/healthz",
    response_class=Response,
    responses={200: {"model": HealthOut, "description": "Successful Response"}},
    summary="The process is up",
)
async def healthz() -> Response:
    return Response(_HEALTHY, media_type="application/json")


@router.get(
    "/readyz",
    response_model=HealthOut,
    responses={503: {"model": HealthOut, "description": "A dependency is failing."}},
    summary="Dependencies reachable, model loaded where this process runs jobs",
)
def readyz(services: ServicesDep) -> Any:
    # With the inline queue the checks include "model": the pipeline process can work.
    checks = run_checks(services.readiness_checks)
    healthy = all(v == "ok" for v in checks.values())
    body = HealthOut(status="ok" if healthy else "failing", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus text format; behind METRICS_BEARER_TOKEN when it is set, and closed without
    one in the staging and prod profiles (a public service should not show its traffic to
    everyone; a sidecar reads METRICS_PORT). Sync: the jobs gauge may read the job store."""
    if not scrape_allowed(
        request.headers.get("authorization"),
        services.settings.metrics_bearer_token,
        open_without_token=not services.settings.is_production,
    ):
        raise ProblemError(
            "unauthenticated",
            "Send the metrics token as `Authorization: Bearer <token>`.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return Response(metrics_text(), media_type=METRICS_CONTENT_TYPE)


@router.get("/problems/{code}", include_in_schema=False)
def problem_type(code: str) -> dict[str, Any]:
    """Resolves the `type` URI of a problem response to its description."""
    if code not in PROBLEM_TYPES:
        raise ProblemError("not-found", f"No problem type {code!r}.")
    status, title = PROBLEM_TYPES[code]
    return {"type": f"/problems/{code}", "code": code, "status": status, "title": title}
