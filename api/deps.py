"""FastAPI dependencies, as Annotated aliases the routes use."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from starlette.concurrency import run_in_threadpool

from api.api_keys import Principal
from api.problems import ProblemError
from api.wiring import Services
from dal.ports import RateLimitDecision, RateLimiter

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")
_REALM = "txt2img"
# AUTOMATIC1111 clients authenticate as A1111's `--api-auth user:pass` asks: HTTP Basic.
_basic = HTTPBasic(
    auto_error=False,
    realm=_REALM,
    description="AUTOMATIC1111 routes: an API key as the password (any user name).",
)


async def get_services(request: Request) -> Services:
    # Async: an attribute read, which FastAPI would otherwise run on a threadpool thread for
    # every request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


# Authentication and the rate limit are async dependencies: a key this process verified and an
# in-process rate limit need no I/O, and a sync dependency would cost a threadpool hop on every
# request. What may block (a store read, a Redis call) still runs on the threadpool.


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    challenge = {"WWW-Authenticate": f'Bearer realm="{_REALM}"'}
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ProblemError(
            "unauthenticated",
            "Send an API key as `Authorization: Bearer <key>`.",
            headers=challenge,
        )
    return await _authenticated(services, credentials.credentials, challenge)


async def get_basic_or_bearer_principal(
    services: ServicesDep,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller of the AUTOMATIC1111 routes: an API key as the password of HTTP Basic (the
    user name is not looked at), or as a Bearer token. A 401 challenges with Basic, the scheme
    A1111 clients answer."""
    challenge = {"WWW-Authenticate": f'Basic realm="{_REALM}"'}
    presented = basic.password if basic is not None else None
    if presented is None and bearer is not None:
        presented = bearer.credentials
    if not presented:
        raise ProblemError(
            "unauthenticated",
            "Send an API key as the password of HTTP Basic authentication (any user name), "
            "or as `Authorization: Bearer <key>`.",
            headers=challenge,
        )
    return await _authenticated(services, presented, challenge)


async def _authenticated(services: Services, key: str, challenge: dict[str, str]) -> Principal:
    principal = services.keys.verified(key)
    if principal is None:
        principal = await run_in_threadpool(services.keys.authenticate, key)
    if principal is None:
        raise ProblemError(
            "unauthenticated", "The API key is not valid or has been revoked.", headers=challenge
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
BasicOrBearerPrincipalDep = Annotated[Principal, Depends(get_basic_or_bearer_principal)]


def _rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    # IETF draft "RateLimit header fields for HTTP" (RateLimit-Limit/-Remaining/-Reset).
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after_s)),
    }


async def _enforce(
    services: Services, limiter: RateLimiter, principal: Principal, response: Response, scope: str
) -> None:
    key = f"{scope}:{principal.key_id}"
    if services.rate_limits_block:
        decision = await run_in_threadpool(limiter.hit, key)
    else:
        decision = limiter.hit(key)
    headers = _rate_limit_headers(decision)
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ProblemError(
            "rate-limited",
            f"Rate limit for {scope} requests exceeded; retry after {headers['Retry-After']} s.",
            headers=headers,
        )
    response.headers.update(headers)


async def submit_rate_limit(
    services: ServicesDep, principal: PrincipalDep, response: Response
) -> None:
    await _enforce(services, services.submit_limiter, principal, response, "submit")


async def read_rate_limit(
    services: ServicesDep, principal: PrincipalDep, response: Response
) -> None:
    await _enforce(services, services.read_limiter, principal, response, "read")


# The same limits for routes that also take HTTP Basic (AUTOMATIC1111): one bucket per key,
# whichever scheme carried it.
async def basic_or_bearer_submit_rate_limit(
    services: ServicesDep, principal: BasicOrBearerPrincipalDep, response: Response
) -> None:
    await _enforce(services, services.submit_limiter, principal, response, "submit")


async def basic_or_bearer_read_rate_limit(
    services: ServicesDep, principal: BasicOrBearerPrincipalDep, response: Response
) -> None:
    await _enforce(services, services.read_limiter, principal, response, "read")
