"""Webhook URL rules: shape everywhere; https and public addresses only under `public`;
loopback and private addresses too under `any`; the operator's allow-list on top; the metadata
server never. (What happens at send time: test_webhook_egress.py.)"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dal.errors import InvalidWebhookUrl
from dal.settings import WebhookTargets
from dal.webhooks.urls import WebhookUrlPolicy


def resolver(
    table: dict[str, Sequence[str]], targets: WebhookTargets = "public", allowed: Sequence[str] = ()
) -> WebhookUrlPolicy:
    def resolve(host: str, port: int) -> Sequence[str]:
        return table.get(host, ())

    return WebhookUrlPolicy(targets, resolve=resolve, allowed_networks=allowed)


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
            "https://[::ffff:169.254.169.254]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::1]/",
            "https://[::7f00:1]/",
            "https://[fe80::1]/",
            "https://[fc00::1]/",
            "https://[fd00:ec2::254]/",
            "https://[::]/",
            "https://224.0.0.1/",
            "https://[ff02::1]/",
            "https://255.255.255.255/",
            "https://240.0.0.1/",
            "https://[2001:db8::1]/",
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
        "url", ["https://[::ffff:93.184.216.34]/", "https://[64:ff9b::5db8:d822]/"]
    )
    def test_a_public_ipv4_address_in_an_ipv6_form_is_accepted(self, url: str) -> None:
        """IPv4-mapped and NAT64 forms are judged by the IPv4 address they carry."""
        assert PUBLIC.check(url) == url

    @pytest.mark.parametrize(
        "url",
        [
            "https://metadata.google.internal/",
            "https://METADATA.google.internal./x",
            "https://metadata.goog/",
            "https://metadata/",
        ],
    )
    @pytest.mark.parametrize("targets", ["public", "any"])
    def test_the_metadata_server_is_refused_by_name(
        self, url: str, targets: WebhookTargets
    ) -> None:
        """Whatever the resolver would say, in every mode."""
        policy = resolver({"metadata.google.internal": ["93.184.216.34"]}, targets)
        with pytest.raises(InvalidWebhookUrl, match="metadata"):
            policy.check(url)

    def test_a_host_that_does_not_resolve_is_refused(self) -> None:
        """No address: nothing to vet, so no."""
        with pytest.raises(InvalidWebhookUrl, match="does not resolve"):
            PUBLIC.check("https://nowhere.example.com/")


class TestDevelopmentTargets:
    @pytest.mark.parametrize(
        "url",
        [
            "http://10.1.2.3:8000/hook",
            "http://[fc00::1]/hook",
            "http://100.64.0.1/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://local.example.com/hook",
        ],
    )
    def test_any_accepts_private_and_loopback_receivers(self, url: str) -> None:
        """A development receiver on the host, a container network or a VPN."""
        assert resolver({"local.example.com": ["127.0.0.1"]}, "any").check(url) == url

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/computeMetadata/v1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://rebound.example.com/",
            "http://0.0.0.0:8000/",
            "http://224.0.0.1/",
        ],
    )
    def test_any_refuses_the_metadata_server_and_what_is_no_receiver(self, url: str) -> None:
        """Link-local (the metadata server), unspecified and multicast are refused locally
        too."""
        policy = resolver({"rebound.example.com": ["93.184.216.34", "169.254.169.254"]}, "any")
        with pytest.raises(InvalidWebhookUrl, match="public, private or loopback"):
            policy.check(url)


class TestAllowList:
    def test_listed_networks_pass_under_public_and_others_do_not(self) -> None:
        """10.8.0.0/16 and fd12::/16 listed: their addresses pass, by name or literally;
        10.9.0.1 and loopback still do not; https is still required."""
        policy = resolver(
            {"hooks.internal": ["10.8.3.4", "fd12::7"]},
            allowed=["10.8.0.0/16", "fd12::/16"],
        )
        assert policy.check("https://hooks.internal/x") == "https://hooks.internal/x"
        assert policy.check("https://10.8.0.1/x") == "https://10.8.0.1/x"
        assert policy.check("https://[::ffff:10.8.0.1]/x") == "https://[::ffff:10.8.0.1]/x"
        for url in ("https://10.9.0.1/", "https://127.0.0.1/"):
            with pytest.raises(InvalidWebhookUrl, match="public address"):
                policy.check(url)
        with pytest.raises(InvalidWebhookUrl, match="https"):
            policy.check("http://10.8.0.1/x")

    @pytest.mark.parametrize(
        "url", ["https://169.254.169.254/", "https://[fe80::1]/", "https://[fd00:ec2::254]/"]
    )
    def test_the_metadata_server_stays_refused_when_listed(self, url: str) -> None:
        """Even an allow-list of everything."""
        policy = resolver({}, allowed=["0.0.0.0/0", "::/0"])
        with pytest.raises(InvalidWebhookUrl, match="never a webhook receiver"):
            policy.check(url)
