"""FastAPI dependencies, as Annotated aliases the routes use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from fastapi.security.utils import get_authorization_scheme_param
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
#
# A route takes one `Caller` dependency, which authenticates and rate-limits in one step: FastAPI
# resolves every node of a route's dependency graph per request (tens of microseconds each), and
# separate services, principal and rate-limit nodes made the dependencies a third of a read's
# CPU (issue 19).


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, once authenticated and admitted by the rate limit of the route's kind,
    with the services to answer them."""

    principal: Principal
    services: Services

    @property
    def owner(self) -> str:
        return self.principal.owner


BEARER_CHALLENGE = {"WWW-Authenticate": f'Bearer realm="{_REALM}"'}
_BASIC_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{_REALM}"'}
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
BasicCredentials = Annotated[HTTPBasicCredentials | None, Depends(_basic)]


def _bearer_key(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _no_bearer_key()
    return credentials.credentials


def _no_bearer_key() -> ProblemError:
    return ProblemError(
        "unauthenticated",
        "Send an API key as `Authorization: Bearer <key>`.",
        headers=BEARER_CHALLENGE,
    )


def _basic_or_bearer_key(
    basic: HTTPBasicCredentials | None, bearer: HTTPAuthorizationCredentials | None
) -> str:
    """An API key as the password of HTTP Basic (the user name is not looked at), or as a
    Bearer token: how AUTOMATIC1111 clients authenticate (`--api-auth user:pass`)."""
    presented = basic.password if basic is not None else None
    if presented is None and bearer is not None:
        presented = bearer.credentials
    if not presented:
        raise ProblemError(
            "unauthenticated",
            "Send an API key as the password of HTTP Basic authentication (any user name), "
            "or as `Authorization: Bearer <key>`.",
            headers=_BASIC_CHALLENGE,
        )
    return presented


async def _admitted(
    request: Request, response: Response, key: str, challenge: dict[str, str], kind: str
) -> Caller:
    caller, headers = await admitted(await get_services(request), key, challenge, kind)
    response.headers.update(headers)
    return caller


async def admitted(
    services: Services, key: str, challenge: dict[str, str], kind: str
) -> tuple[Caller, dict[str, str]]:
    """The caller presenting `key`, authenticated and admitted by the rate limit of `kind`
    ("read" or "submit"), with the RateLimit-* headers of its answer. Raises the 401 problem
    (challenging with `challenge`) or the 429 one. The routes' `Caller` dependencies and the
    hot routes (api/hot_routes.py) admit a request through here."""
    principal = services.keys.verified(key)
    if principal is None:
        principal = await run_in_threadpool(services.keys.authenticate, key)
    if principal is None:
        raise ProblemError(
            "unauthenticated", "The API key is not valid or has been revoked.", headers=challenge
        )
    limiter = services.submit_limiter if kind == "submit" else services.read_limiter
    return Caller(principal, services), await _enforce(services, limiter, principal, kind)


def bearer_key(authorization: str | None) -> str:
    """The API key of an `Authorization` header, read as `HTTPBearer` reads it. Raises the
    401 problem, challenging with Bearer, when there is none."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if authorization and scheme and credentials and scheme.lower() == "bearer":
        return credentials
    raise _no_bearer_key()


async def _reader(request: Request, response: Response, bearer: BearerCredentials) -> Caller:
    return await _admitted(request, response, _bearer_key(bearer), BEARER_CHALLENGE, "read")


async def _submitter(request: Request, response: Response, bearer: BearerCredentials) -> Caller:
    return await _admitted(request, response, _bearer_key(bearer), BEARER_CHALLENGE, "submit")


# The same limits for routes that also take HTTP Basic (AUTOMATIC1111): one bucket per key,
# whichever scheme carried it. A 401 challenges with Basic, the scheme A1111 clients answer.
async def _basic_or_bearer_reader(
    request: Request, response: Response, basic: BasicCredentials, bearer: BearerCredentials
) -> Caller:
    key = _basic_or_bearer_key(basic, bearer)
    return await _admitted(request, response, key, _BASIC_CHALLENGE, "read")


async def _basic_or_bearer_submitter(
    request: Request, response: Response, basic: BasicCredentials, bearer: BearerCredentials
) -> Caller:
    key = _basic_or_bearer_key(basic, bearer)
    return await _admitted(request, response, key, _BASIC_CHALLENGE, "submit")


Reader = Annotated[Caller, Depends(_reader)]
"""A caller of a read route (GET), counted against the read rate limit."""
Submitter = Annotated[Caller, Depends(_submitter)]
"""A caller of a route that creates or changes jobs, counted against the submit rate limit."""
BasicOrBearerReader = Annotated[Caller, Depends(_basic_or_bearer_reader)]
BasicOrBearerSubmitter = Annotated[Caller, Depends(_basic_or_bearer_submitter)]


def _rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    # IETF draft "RateLimit header fields for HTTP" (RateLimit-Limit/-Remaining/-Reset).
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_after_s)),
    }


async def _enforce(
    services: Services, limiter: RateLimiter, principal: Principal, scope: str
) -> dict[str, str]:
    key = _rate_limit_key(scope, principal)
    if services.rate_limits_block:
        decision = await run_in_threadpool(limiter.hit, key)
    else:
        decision = limiter.hit(key)
    return _admitted_headers(decision, scope)


def _rate_limit_key(scope: str, principal: Principal) -> str:
    return f"{scope}:{principal.key_id}"


def _admitted_headers(decision: RateLimitDecision, scope: str) -> dict[str, str]:
    """The RateLimit-* headers of a request the limit let through; a refused one raises the
    429 problem (with Retry-After)."""
    headers = _rate_limit_headers(decision)
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
        raise ProblemError(
            "rate-limited",
            f"Rate limit for {scope} requests exceeded; retry after {headers['Retry-After']} s.",
            headers=headers,
        )
    return headers
