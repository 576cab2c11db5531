"""Authenticates Pub/Sub push requests: the OIDC token Pub/Sub signs with the push
subscription's service account, checked for signature, audience, issuer, expiry and email."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dal.errors import PushUnauthorized

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class PushAuthenticator(Protocol):
    def verify(self, authorization: str | None) -> None:
        """Raises PushUnauthorized unless the request comes from our push subscription."""
        ...


class NoPushAuth:
    """For the emulators, which send no token. Settings refuse it in production profiles."""

    def verify(self, authorization: str | None) -> None:
        return None


class OidcPushAuth:
    def __init__(
        self,
        *,
        audience: str,
        service_account_email: str,
        certs_url: str = GOOGLE_CERTS_URL,
        request_factory: Callable[[], Any] | None = None,
    ) -> None:
        self._audience = audience
        self._email = service_account_email
        self._certs_url = certs_url
        self._request_factory = request_factory or _default_request
        self._request: Any = None

    def verify(self, authorization: str | None) -> None:
        from google.auth import exceptions as auth_exceptions
        from google.oauth2 import id_token

        if not authorization or not authorization.lower().startswith("bearer "):
            raise PushUnauthorized("missing bearer token")
        token = authorization.split(" ", 1)[1].strip()
        if self._request is None:
            # A cached session also caches Google's public keys between requests.
            self._request = self._request_factory()
        try:
            claims = id_token.verify_token(
                token, self._request, audience=self._audience, certs_url=self._certs_url
            )
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:
            raise PushUnauthorized(f"invalid token: {exc}") from exc
        if claims.get("iss") not in ("https://accounts.google.com", "accounts.google.com"):
            raise PushUnauthorized("token not issued by Google")
        if not claims.get("email_verified") or claims.get("email") != self._email:
            raise PushUnauthorized("token is not from the push service account")


def _default_request() -> Any:
    import cachecontrol
    import google.auth.transport.requests
    import requests

    session = cachecontrol.CacheControl(requests.session())
    return google.auth.transport.requests.Request(session=session)
