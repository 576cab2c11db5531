"""Which webhook URLs the service accepts: a guard against server-side request forgery.

`public` (production profiles): https only, and every address the host resolves to must be a
public one: no loopback, private, link-local (the metadata server lives there), shared, reserved
or multicast address. `any` (local, test, emulator, selfhosted): http or https to any host, so a
receiver on 127.0.0.1 works in development.

The check runs at submit (a clear 422) and again before every delivery, since what a name
resolves to can change after the job was accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from dal.errors import InvalidWebhookUrl
from dal.settings import WebhookTargets

MAX_URL_LENGTH = 2048
# Names that reach a cloud metadata server whatever the resolver says.
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})

Resolver = Callable[[str, int], Sequence[str]]


def resolve_addresses(host: str, port: int) -> Sequence[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidWebhookUrl(f"the host {host!r} does not resolve") from exc
    return [str(info[4][0]) for info in infos]


class WebhookUrlPolicy:
    def __init__(self, targets: WebhookTargets, *, resolve: Resolver = resolve_addresses) -> None:
        self.targets = targets
        self._resolve = resolve

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
        """The whole rule, resolving the host under `public`. Raises InvalidWebhookUrl."""
        self.check_syntax(url)
        if self.targets == "any":
            return url
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
        if host in _METADATA_HOSTS:
            raise InvalidWebhookUrl("must not point at the metadata server")
        addresses = self._literal_or_resolved(host, parts.port or 443)
        for address in addresses:
            if not _is_public(address):
                raise InvalidWebhookUrl(
                    f"must point at a public address; {host} resolves to {address}"
                )
        return url

    def _literal_or_resolved(self, host: str, port: int) -> Sequence[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        addresses = self._resolve(host, port)
        if not addresses:
            raise InvalidWebhookUrl(f"the host {host!r} does not resolve")
        return addresses


def _is_public(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
