"""The caller's webhook signing secret: each owner has their own, so one user's secret can
never forge a delivery to another's receiver. It is a Standard Webhooks secret (`whsec_` +
base64), which any Standard Webhooks library takes as is; dal/webhooks/signing.py signs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import Reader
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
    responses=_PROBLEMS,
    summary="Your webhook signing secret (verify deliveries with it)",
)
def get_webhook_secret(caller: Reader, response: Response) -> WebhookSecretOut:
    response.headers["Cache-Control"] = "no-store"
    secret = owner_secret(caller.services.settings.resolved_webhook_signing_secret, caller.owner)
    return WebhookSecretOut(secret=secret)
