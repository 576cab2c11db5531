"""Which webhook URLs the service accepts and which addresses it may connect to: a guard
against server-side request forgery.

`resolve` turns a URL into a `WebhookTarget`: the host resolved once, every address checked.
The sender connects to those checked addresses and never looks the name up again, so a name
that is re-pointed between the check and the connection (DNS rebinding) cannot move the
request inside.

What an address may be depends on the mode (WEBHOOK_TARGETS):

- `public` (staging, prod, selfhosted): https only, and every address must be a public unicast
  one: no loopback, private, shared (CGNAT), link-local, unspecified, multicast, broadcast,
  reserved or other special-purpose address, also not when carried inside an IPv6 form
  (IPv4-mapped, 6to4, NAT64).
- `any` (local, test, emulator): http too, and loopback, private and shared addresses as well,
  so a receiver on 127.0.0.1 works in development.

In both, networks the operator lists in WEBHOOK_ALLOWED_NETWORKS are let through, and the
cloud metadata server (its names, and the whole link-local range it lives in) never is: on
Cloud Run and GKE it hands out the service account's token to whoever asks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from dal.errors import InvalidWebhookUrl
from dal.settings import WebhookTargets

MAX_URL_LENGTH = 2048
# Names that reach a cloud metadata server whatever the resolver says.
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Never a receiver, whatever the mode or the allow-list says. The metadata servers
# (169.254.169.254; GCE's fd20:ce::254 and EC2's fd00:ec2::254 over IPv6) and the rest of
# link-local, where other hosts' agents listen too.
_NEVER = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd20:ce::254/128", "fd00:ec2::254/128")
)
# Spelled out rather than taken from `is_private`, which also covers documentation,
# benchmarking and protocol ranges, and whose exact list changes between Python releases.
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT, RFC 6598
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.x.y.z to this host
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d (RFC 4291)
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated, but `is_global` says yes
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # all other IPv6 space is special

Category = Literal["public", "loopback", "private", "shared", "never", "special"]
# What `any` lets through besides public addresses; `public` lets through only those.
_DEVELOPMENT: frozenset[Category] = frozenset({"loopback", "private", "shared"})


@dataclass(frozen=True)
class WebhookTarget:
    """A URL whose host was resolved once and whose every address passed the policy: the
    addresses to connect to, in the resolver's order."""

    url: str
    host: str
    addresses: tuple[str, ...]


def resolve_addresses(host: str, port: int) -> Sequence[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidWebhookUrl(f"the host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


class WebhookUrlPolicy:
    def __init__(
        self,
        targets: WebhookTargets,
        *,
        resolve: Resolver = resolve_addresses,
        allowed_networks: Iterable[str | IPNetwork] = (),
    ) -> None:
        self.targets = targets
        self._resolve = resolve
        self.allowed_networks = tuple(
            ipaddress.ip_network(n) if isinstance(n, str) else n for n in allowed_networks
        )

    def check_syntax(self, url: str) -> str:
        """Shape only, no network: an absolute http(s) URL without credentials. Raises
        InvalidWebhookUrl."""
        if len(url) > MAX_URL_LENGTH:
            raise InvalidWebhookUrl(f"must be at most {MAX_URL_LENGTH} characters")
        if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
            raise InvalidWebhookUrl("must be ASCII without spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidWebhookUrl(f"is not a valid URL ({exc})") from None
        allowed = ("https",) if self.targets == "public" else ("http", "https")
        if parts.scheme.lower() not in allowed:
            raise InvalidWebhookUrl(f"must be an absolute {' or '.join(allowed)} URL")
        if not parts.hostname:
            raise InvalidWebhookUrl("must name a host")
        if parts.username is not None or parts.password is not None:
            raise InvalidWebhookUrl("must not contain credentials")
        if port == 0:
            raise InvalidWebhookUrl("must not use port 0")
        return url

    def check(self, url: str) -> str:
        """The whole rule, resolving the host: what submit answers 422 to. Raises
        InvalidWebhookUrl."""
        self.resolve(url)
        return url

    def resolve(self, url: str) -> WebhookTarget:
        """Resolve the host once and check every address it has; the sender connects to
        these and nothing else. Raises InvalidWebhookUrl."""
        self.check_syntax(url)
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        if host in _METADATA_HOSTS:
            raise InvalidWebhookUrl("must not point at the metadata server")
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        literal = _ip_or_none(host)
        addresses = (str(literal),) if literal is not None else self._resolved(host, port)
        for address in addresses:
            refusal = self._refusal(address)
            if refusal is not None:
                found = f"{host} is" if literal is not None else f"{host} resolves to {address},"
                raise InvalidWebhookUrl(
                    f"must point at a {self._wanted()} address; {found} {refusal}"
                )
        return WebhookTarget(url=url, host=host, addresses=addresses)

    def _wanted(self) -> str:
        return "public" if self.targets == "public" else "public, private or loopback"

    def _refusal(self, address: str) -> str | None:
        """Why the address is not a receiver under this policy; None when it may be."""
        ip = _ip_or_none(address)
        if ip is None:
            return "not an IP address"
        effective = _embedded_ipv4(ip) or ip
        category, label = _classify(effective)
        if category == "never":
            return f"{label}, never a webhook receiver"  # not even when allow-listed
        if category == "public" or (self.targets == "any" and category in _DEVELOPMENT):
            return None
        if any(effective in network for network in self.allowed_networks):
            return None
        return label

    def _resolved(self, host: str, port: int) -> tuple[str, ...]:
        # One entry per address even when the resolver lists it per protocol or family.
        addresses = tuple(dict.fromkeys(self._resolve(host, port)))
        if not addresses:
            raise InvalidWebhookUrl(f"the host {host!r} does not resolve")
        return addresses


def _ip_or_none(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches when it is only a wrapper around it."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _classify(ip: IPAddress) -> tuple[Category, str]:
    """The category, and what to call the address in a refusal. The caller unwraps IPv4
    carried in IPv6."""
    if any(ip in network for network in _NEVER):
        return "never", "a metadata server or link-local address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "special", "an unspecified address"
    if ip.is_loopback:
        return "loopback", "a loopback address"
    if ip.is_multicast:
        return "special", "a multicast address"
    if any(ip in network for network in _PRIVATE):
        return "private", "a private address"
    if ip in _SHARED:
        return "shared", "a shared (carrier-grade NAT) address"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "special", "the broadcast address"
        if ip.is_reserved:
            return "special", "a reserved address"
        return ("public", "") if ip.is_global else ("special", "a special-purpose address")
    if ip in _IPV4_COMPATIBLE:
        return "special", "a deprecated IPv4-compatible address"
    if ip in _SITE_LOCAL:
        return "special", "a deprecated site-local address"
    if ip in _GLOBAL_UNICAST_V6 and ip.is_global:
        return "public", ""
    return "special", "a special-purpose address"
