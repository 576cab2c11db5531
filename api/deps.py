"""FastAPI dependencies, as Annotated aliases the routes use."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.api_keys import Principal
from api.problems import ProblemError
from api.wiring import Services
from dal.ports import RateLimitDecision, RateLimiter

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    challenge = {"WWW-Authenticate": 'Bearer realm="txt2img"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(
            "unauthenticated",
            "Send an API key as `Authorization: Bearer <key>`.",
            headers=challenge,
        )
    principal = services.keys.authenticate(credentials.credentials)
    if principal is None:
        raise ProblemError(
            "unauthenticated", "The API key is not valid or has been revoked.", headers=challenge
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    # IETF draft "RateLimit header fields for HTTP" (RateLimit-Limit/-Remaining/-Reset).
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after_s)),
    }


def _enforce(limiter: RateLimiter, principal: Principal, response: Response, scope: str) -> None:
    decision = limiter.hit(f"{scope}:{principal.key_id}")
    headers = _rate_limit_headers(decision)
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ProblemError(
            "rate-limited",
            f"Rate limit for {scope} requests exceeded; retry after {headers['Retry-After']} s.",
            headers=headers,
        )
    response.headers.update(headers)


def submit_rate_limit(services: ServicesDep, principal: PrincipalDep, response: Response) -> None:
    _enforce(services.submit_limiter, principal, response, "submit")


def read_rate_limit(services: ServicesDep, principal: PrincipalDep, response: Response) -> None:
    _enforce(services.read_limiter, principal, response, "read")
