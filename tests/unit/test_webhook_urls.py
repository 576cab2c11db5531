"""Webhook URL rules: shape everywhere; https and public addresses only under `public`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dal.errors import InvalidWebhookUrl
from dal.webhooks.urls import WebhookUrlPolicy


def resolver(table: dict[str, Sequence[str]]) -> WebhookUrlPolicy:
    def resolve(host: str, port: int) -> Sequence[str]:
        return table.get(host, ())

    return WebhookUrlPolicy("public", resolve=resolve)


PUBLIC = resolver(
    {
        "hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "sneaky.example.com": ["93.184.216.34", "10.0.0.7"],
        "local.example.com": ["127.0.0.1"],
        "v6local.example.com": ["::1"],
        "mapped.example.com": ["::ffff:169.254.169.254"],
    }
)
ANY = WebhookUrlPolicy("any")


class TestShape:
    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("hooks.example.com/path", "absolute"),
            ("/relative/path", "absolute"),
            ("ftp://hooks.example.com/x", "absolute"),
            ("javascript:alert(1)", "absolute"),
            ("https://", "host"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("https://token@hooks.example.com/", "credentials"),
            ("https://hooks.example.com/a b", "spaces"),
            ("https://hooks.example.com/\u00e9", "ASCII"),
            ("https://hooks.example.com:99999/", "valid URL"),
            ("https://hooks.example.com:0/", "port 0"),
            ("https://hooks.example.com/" + "a" * 2048, "2048"),
        ],
    )
    def test_malformed_urls_are_refused_under_any_policy(self, url: str, reason: str) -> None:
        """Shape rules hold in every profile."""
        for policy in (ANY, PUBLIC):
            with pytest.raises(InvalidWebhookUrl, match=reason):
                policy.check(url)

    def test_any_accepts_http_to_loopback(self) -> None:
        """Locally, a receiver on 127.0.0.1 over plain http is fine."""
        assert ANY.check("http://127.0.0.1:9000/hook?x=1") == "http://127.0.0.1:9000/hook?x=1"
        assert ANY.check("https://localhost/hook") == "https://localhost/hook"


class TestPublicTargets:
    def test_https_to_a_public_host_is_accepted(self) -> None:
        """Every address of the host is public: accepted."""
        assert PUBLIC.check("https://hooks.example.com/txt2img") == (
            "https://hooks.example.com/txt2img"
        )
        assert PUBLIC.check("https://93.184.216.34:8443/x") == "https://93.184.216.34:8443/x"

    def test_plain_http_is_refused(self) -> None:
        """Production deliveries are encrypted."""
        with pytest.raises(InvalidWebhookUrl, match="https"):
            PUBLIC.check("http://hooks.example.com/txt2img")

    @pytest.mark.parametrize(
        "url",
        [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/computeMetadata/v1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[fd00::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://local.example.com/",
            "https://v6local.example.com/",
            "https://mapped.example.com/",
            "https://sneaky.example.com/",
        ],
    )
    def test_non_public_addresses_are_refused(self, url: str) -> None:
        """Loopback, private, link-local, shared, unspecified, or any one such address among
        those a name resolves to: refused."""
        with pytest.raises(InvalidWebhookUrl, match="public address"):
            PUBLIC.check(url)

    @pytest.mark.parametrize(
        "url", ["https://metadata.google.internal/", "https://METADATA.google.internal./x"]
    )
    def test_the_metadata_server_is_refused_by_name(self, url: str) -> None:
        """Whatever the resolver would say."""
        with pytest.raises(InvalidWebhookUrl, match="metadata"):
            PUBLIC.check(url)

    def test_a_host_that_does_not_resolve_is_refused(self) -> None:
        """No address: nothing to vet, so no."""
        with pytest.raises(InvalidWebhookUrl, match="does not resolve"):
            PUBLIC.check("https://nowhere.example.com/")
