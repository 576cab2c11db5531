"""The caller's webhook signing secret: each owner has their own, so one user's secret can
never forge a delivery to another's receiver. It is a Standard Webhooks secret (`whsec_` +
base64), which any Standard Webhooks library takes as is; dal/webhooks/signing.py signs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from api.deps import PrincipalDep, ServicesDep, read_rate_limit
from api.problems import PROBLEM_MEDIA_TYPE
from api.schemas import Problem, WebhookSecretOut
from dal.webhooks.signing import owner_secret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for code in (401, 429, 503)
}


@router.get(
    "/secret",
    response_model=WebhookSecretOut,
    dependencies=[Depends(read_rate_limit)],
    responses=_PROBLEMS,
    summary="Your webhook signing secret (verify deliveries with it)",
)
def get_webhook_secret(
    principal: PrincipalDep, services: ServicesDep, response: Response
) -> WebhookSecretOut:
    response.headers["Cache-Control"] = "no-store"
    secret = owner_secret(services.settings.resolved_webhook_signing_secret, principal.owner)
    return WebhookSecretOut(secret=secret)
