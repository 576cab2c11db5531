"""OIDC verification of push requests, with tokens signed by a key of our own and its
certificate served by a local key endpoint (no network, the real google-auth verification)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from dal.errors import PushUnauthorized
from gpu_worker.push_auth import NoPushAuth, OidcPushAuth

AUDIENCE = "https://worker.example.run.app/pubsub/push"
PUSH_ACCOUNT = "push-invoker@proj.iam.gserviceaccount.com"
CERTS_URL = "https://keys.local.test/certs"


@dataclass
class KeyPair:
    kid: str
    private_pem: bytes
    cert_pem: str


def make_key(kid: str) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return KeyPair(
        kid=kid,
        private_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


@dataclass
class _Response:
    status: int
    data: bytes


class LocalKeyEndpoint:
    """Stands in for Google's certificate endpoint: a google.auth transport Request."""

    def __init__(self, *keys: KeyPair) -> None:
        self.keys = {k.kid: k.cert_pem for k in keys}
        self.fetches = 0

    def __call__(self, url: str, method: str = "GET", **_: object) -> _Response:
        assert url == CERTS_URL
        self.fetches += 1
        return _Response(status=200, data=json.dumps(self.keys).encode())


def token(key: KeyPair, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": PUSH_ACCOUNT,
        "email_verified": True,
        "sub": "1234",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    signer = crypt.RSASigner.from_string(key.private_pem, key_id=key.kid)
    return jwt.encode(signer, claims).decode()


@pytest.fixture(scope="module")
def google_key() -> KeyPair:
    return make_key("google-key-1")


@pytest.fixture
def auth(google_key: KeyPair) -> OidcPushAuth:
    return OidcPushAuth(
        audience=AUDIENCE,
        service_account_email=PUSH_ACCOUNT,
        certs_url=CERTS_URL,
        request_factory=lambda: LocalKeyEndpoint(google_key),
    )


class TestOidcPushAuth:
    def test_a_valid_token_passes(self, auth: OidcPushAuth, google_key: KeyPair) -> None:
        """A token signed by the published key, for our audience and account, is accepted."""
        auth.verify(f"Bearer {token(google_key)}")

    @pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer not.a.jwt"])
    def test_missing_or_garbled_tokens_are_refused(self, auth: OidcPushAuth, header) -> None:
        """No token, another scheme, or a non-JWT is refused."""
        with pytest.raises(PushUnauthorized):
            auth.verify(header)

    @pytest.mark.parametrize(
        ("claims", "why"),
        [
            ({"aud": "https://attacker.example/push"}, "audience"),
            ({"email": "someone-else@proj.iam.gserviceaccount.com"}, "account"),
            ({"email_verified": False}, "unverified email"),
            ({"iss": "https://evil.example"}, "issuer"),
            ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4000}, "expired"),
        ],
    )
    def test_wrong_claims_are_refused(
        self, auth: OidcPushAuth, google_key: KeyPair, claims, why
    ) -> None:
        """Audience, account, verification, issuer and expiry are all enforced."""
        with pytest.raises(PushUnauthorized):
            auth.verify(f"Bearer {token(google_key, **claims)}")

    def test_a_token_signed_by_another_key_is_refused(self, auth: OidcPushAuth) -> None:
        """A well-formed token whose signature does not match a published key is refused."""
        forger = make_key("google-key-1")  # same key id, different key
        with pytest.raises(PushUnauthorized):
            auth.verify(f"Bearer {token(forger)}")

    def test_no_auth_accepts_anything(self) -> None:
        """The emulator profile's authenticator lets every request through."""
        NoPushAuth().verify(None)
