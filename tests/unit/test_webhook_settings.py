"""Webhook settings per profile: production signs with a real secret; production and
self-hosted installs only reach public https targets (and the networks the operator allows);
development profiles reach loopback."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dal.settings import PLACEHOLDER_MARKER, Settings
from dal.webhooks.signing import owner_secret

STRONG = "s" * 40
PROD: dict[str, Any] = {
    "app_env": "prod",
    "api_key_pepper": STRONG,
    "url_signing_secret": "u" * 40,
    "push_audience": "https://worker.example/pubsub/push",
    "push_service_account": "push@p.iam.gserviceaccount.com",
    "gcs_signing_service_account": "api@p.iam.gserviceaccount.com",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "APP_ENV",
        "WEBHOOK_TARGETS",
        "WEBHOOK_ALLOWED_NETWORKS",
        "WEBHOOK_SIGNING_SECRET",
        "URL_SIGNING_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


class TestWebhookSettings:
    @pytest.mark.parametrize(
        ("env", "targets"),
        [
            ("local", "any"),
            ("test", "any"),
            ("selfhosted", "public"),
            ("staging", "public"),
        ],
    )
    def test_the_profile_picks_the_targets_rule(self, env: str, targets: str) -> None:
        """Loopback receivers locally; public https in production and self-hosted (a cloud VM
        has a metadata server and a VPC beside it)."""
        values = {**PROD, "app_env": env} if env == "staging" else {"app_env": env}
        assert Settings(**values).webhook_targets == targets

    def test_production_refuses_any_targets(self) -> None:
        """WEBHOOK_TARGETS=any would let a user make the service POST to internal hosts."""
        with pytest.raises(ValidationError, match="WEBHOOK_TARGETS=any"):
            Settings(**PROD, webhook_targets="any")

    @pytest.mark.parametrize("secret", [f"{PLACEHOLDER_MARKER}-webhooks-0123456789abcdef", "short"])
    def test_production_refuses_a_placeholder_or_short_webhook_secret(self, secret: str) -> None:
        """A set WEBHOOK_SIGNING_SECRET is held to the same rule as the other secrets."""
        with pytest.raises(ValidationError, match="WEBHOOK_SIGNING_SECRET"):
            Settings(**PROD, webhook_signing_secret=secret)

    def test_unset_the_secret_is_derived_from_the_url_signing_secret(self) -> None:
        """Production needs no extra secret; the derived key is neither input, and a set
        WEBHOOK_SIGNING_SECRET wins."""
        derived = Settings(**PROD).resolved_webhook_signing_secret
        assert derived not in (PROD["url_signing_secret"], STRONG)
        assert derived == Settings(**PROD).resolved_webhook_signing_secret
        other = Settings(**{**PROD, "url_signing_secret": "v" * 40})
        assert other.resolved_webhook_signing_secret != derived
        explicit = Settings(**PROD, webhook_signing_secret="w" * 40)
        assert explicit.resolved_webhook_signing_secret == "w" * 40
        assert owner_secret(derived, "alice") != owner_secret("w" * 40, "alice")

    def test_allowed_networks_are_read_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Comma-separated CIDRs, IPv4 and IPv6, spaces tolerated; none by default."""
        assert Settings().webhook_allowed_network_list == ()
        monkeypatch.setenv("WEBHOOK_ALLOWED_NETWORKS", " 10.8.0.0/16, fd12:3456::/48 ,")
        networks = Settings(**PROD).webhook_allowed_network_list
        assert [str(n) for n in networks] == ["10.8.0.0/16", "fd12:3456::/48"]

    @pytest.mark.parametrize("value", ["10.0.0.1/8", "10.0.0.0/33", "internal", "10.0.0.0/8;"])
    def test_a_malformed_allowed_network_stops_the_start(self, value: str) -> None:
        """A typo (host bits set, no such prefix, not a network) names the variable."""
        with pytest.raises(ValidationError, match="WEBHOOK_ALLOWED_NETWORKS"):
            Settings(webhook_allowed_networks=value)

    def test_backoff_max_below_base_is_refused(self) -> None:
        """The wait cannot cap below its start."""
        with pytest.raises(ValidationError, match="WEBHOOK_BACKOFF_MAX_S"):
            Settings(webhook_backoff_base_s=10, webhook_backoff_max_s=5)
