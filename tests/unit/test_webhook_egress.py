"""Webhook egress that cannot be turned inward: the host is resolved once per attempt, every
address is checked, and the connection goes to a checked address (TLS still verified against
the name); redirects are not followed; an attempt is bounded in time and in what it reads.

Receivers are real servers on 127.0.0.1; names such as hooks.example.test (a reserved TLD the
system resolver never answers) reach them only through a resolver the test controls."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dal.errors import SendFailed
from dal.memory import MemoryJobStore
from dal.records import Job, JobStatus, WebhookDelivery
from dal.settings import Settings
from dal.webhooks.dispatcher import WebhookDispatcher
from dal.webhooks.factory import url_policy
from dal.webhooks.retry import RetryPolicy
from dal.webhooks.sender import HttpxSender, WebhookSender
from dal.webhooks.signing import owner_secret
from dal.webhooks.urls import WebhookTarget, WebhookUrlPolicy
from tests.contracts.job_store_contract import make_job
from tests.webhook_fakes import RecordingSender
from tests.webhook_receiver import always, running_receiver

HOST = "hooks.example.test"
PUBLIC_IP = "93.184.216.34"


# ---- a resolver the test controls ------------------------------------------------------------


@dataclass
class ScriptedResolver:
    """Answers each lookup with the next answer in `answers` (the last one repeats) and
    keeps every lookup it was asked for."""

    answers: list[Sequence[str]]
    lookups: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append((host, port))
        index = min(len(self.lookups), len(self.answers)) - 1
        return self.answers[index]


# ---- a certificate authority of the test's own -----------------------------------------------


@dataclass(frozen=True)
class LocalCA:
    client: ssl.SSLContext  # trusts this CA only
    server_for: Callable[[Sequence[str]], ssl.SSLContext]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    folder = tmp_path_factory.mktemp("ca")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("txt2img test CA"))
        .issuer_name(_name("txt2img test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def server_for(names: Sequence[str]) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        stem = folder / "-".join(names).replace(":", "_")
        cert_file, key_file = Path(f"{stem}.pem"), Path(f"{stem}.key")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    return LocalCA(client=ssl.create_default_context(cafile=str(ca_file)), server_for=server_for)


def recording_sni(context: ssl.SSLContext) -> list[str | None]:
    """The TLS server names clients ask this server context for, as they arrive."""
    names: list[str | None] = []

    def remember(_sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
        names.append(name)

    context.sni_callback = remember
    return names


# ---- a raw HTTP server that answers with whatever the test scripts ---------------------------


class ScriptedServer:
    """Reads one request per connection (kept in `requests`), then hands the socket to
    `respond`."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self._respond = respond
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.requests: list[bytes] = []
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hook"

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(rest) < length:
                rest += connection.recv(65536)
            self.requests.append(data)
            try:
                self._respond(connection)
            finally:
                self.done.set()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(5)


@contextmanager
def scripted(respond: Callable[[socket.socket], None]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(respond)
    try:
        yield server
    finally:
        server.close()


# ---- the dispatcher around a job -------------------------------------------------------------


def render(job: Job) -> bytes:
    return json.dumps({"id": job.id, "status": job.status.value}).encode()


def deliver(url: str, urls: WebhookUrlPolicy, sender: WebhookSender) -> tuple[WebhookDelivery, ...]:
    """One finished job with this webhook, delivered to the end on this thread; what the job
    records."""
    jobs = MemoryJobStore()
    jobs.create(make_job("job-1", status=JobStatus.SUCCEEDED, webhook_url=url))
    dispatcher = WebhookDispatcher(
        jobs=jobs,
        sender=sender,
        render=render,
        secret_for=lambda owner: owner_secret("master-secret-for-tests-0123456789", owner),
        urls=urls,
        retry=RetryPolicy(max_attempts=1, base_s=0.01, max_s=0.01),
        sleep=lambda _: None,
    )
    try:
        return dispatcher.deliver("job-1").webhook_deliveries
    finally:
        sender.close()


def refused(deliveries: tuple[WebhookDelivery, ...]) -> str:
    (only,) = deliveries
    assert only.status_code is None
    assert only.error is not None and only.error.startswith("refused: ")
    return only.error


# ---- the tests -------------------------------------------------------------------------------


class TestResolvedOnceAndPinned:
    def test_a_name_that_turns_private_after_submit_is_never_connected_to(
        self, ca: LocalCA
    ) -> None:
        """Public at submit, 127.0.0.1 at send time: the attempt is refused and recorded, and
        the receiver listening there (with a certificate for the name, so a connection would
        have succeeded) gets nothing."""
        resolver = ScriptedResolver([[PUBLIC_IP], ["127.0.0.1"]])
        policy = WebhookUrlPolicy("public", resolve=resolver)
        with running_receiver(always(204), tls=ca.server_for([HOST])) as receiver:
            url = receiver.url_for(HOST)
            assert policy.check(url) == url  # submit
            deliveries = deliver(url, policy, HttpxSender(timeout_s=2, verify=ca.client))
            assert receiver.received == []
        assert "resolves to 127.0.0.1, a loopback address" in refused(deliveries)
        assert resolver.lookups == [(HOST, receiver.port)] * 2

    def test_one_blocked_address_among_public_ones_refuses_the_name(self) -> None:
        """Every address is checked, not only the first one."""
        resolver = ScriptedResolver([[PUBLIC_IP, "2606:4700::1", "10.0.0.7"]])
        sender = RecordingSender()
        deliveries = deliver(
            f"https://{HOST}/x", WebhookUrlPolicy("public", resolve=resolver), sender
        )
        assert "resolves to 10.0.0.7, a private address" in refused(deliveries)
        assert sender.sent == []

    def test_the_connection_goes_to_the_checked_address_under_the_name(self, ca: LocalCA) -> None:
        """hooks.example.test exists only in the test's resolver (127.0.0.1, allow-listed):
        the receiver gets the POST with `Host` and the TLS server name set to the name, and
        the certificate, issued for the name only, verified. The name is looked up once."""
        server_tls = ca.server_for([HOST])
        server_names = recording_sni(server_tls)
        resolver = ScriptedResolver([["127.0.0.1"]])
        policy = WebhookUrlPolicy("public", resolve=resolver, allowed_networks=["127.0.0.1/32"])
        with running_receiver(always(204), tls=server_tls) as receiver:
            deliveries = deliver(
                receiver.url_for(HOST), policy, HttpxSender(timeout_s=5, verify=ca.client)
            )
            (received,) = receiver.received
        assert [(d.status_code, d.error) for d in deliveries] == [(204, None)]
        assert received.headers["Host"] == f"{HOST}:{receiver.port}"
        assert json.loads(received.body) == {"id": "job-1", "status": "succeeded"}
        assert server_names == [HOST]
        assert resolver.lookups == [(HOST, receiver.port)]

    def test_a_certificate_for_another_name_fails_the_attempt(self, ca: LocalCA) -> None:
        """Connecting to the address does not loosen TLS: the certificate must name the
        URL's host, and here it names only another host (and the address itself)."""
        resolver = ScriptedResolver([["127.0.0.1"]])
        policy = WebhookUrlPolicy("public", resolve=resolver, allowed_networks=["127.0.0.0/8"])
        server_tls = ca.server_for(["other.example.test", "127.0.0.1"])
        with running_receiver(always(204), tls=server_tls) as receiver:
            deliveries = deliver(
                receiver.url_for(HOST), policy, HttpxSender(timeout_s=5, verify=ca.client)
            )
            assert receiver.received == []
        (failed,) = deliveries
        assert failed.status_code is None
        assert failed.error is not None and "CERTIFICATE_VERIFY_FAILED" in failed.error

    def test_the_next_checked_address_is_tried_when_one_does_not_connect(self) -> None:
        """As a client resolving the name would: 127.0.0.2 refuses the connection (the
        receiver listens on 127.0.0.1 only), 127.0.0.1 takes the delivery."""
        resolver = ScriptedResolver([["127.0.0.2", "127.0.0.1"]])
        with running_receiver(always(200)) as receiver:
            deliveries = deliver(
                receiver.url_for(HOST),
                WebhookUrlPolicy("any", resolve=resolver),
                HttpxSender(timeout_s=5),
            )
            assert len(receiver.received) == 1
        assert [d.status_code for d in deliveries] == [200]


BLOCKED_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "::1",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",
    "fd20:ce::254",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "2002:a9fe:a9fe::1",
    "::7f00:1",
    "fec0::1",
    "0.0.0.0",  # noqa: S104 - a destination to refuse, nothing binds to it
    "0.1.2.3",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
    "198.18.0.1",
    "2001:db8::1",
]


class TestBlockedAtSendTime:
    @pytest.mark.parametrize("address", BLOCKED_ADDRESSES)
    def test_every_blocked_range_is_refused_under_public(self, address: str) -> None:
        """The name resolves to the address only when the attempt is made: refused, recorded,
        nothing handed to the sender."""
        resolver = ScriptedResolver([[PUBLIC_IP], [address]])
        policy = WebhookUrlPolicy("public", resolve=resolver)
        url = f"https://{HOST}/hook"
        policy.check(url)
        sender = RecordingSender()
        error = refused(deliver(url, policy, sender))
        assert "must point at a public address" in error
        assert sender.sent == []

    @pytest.mark.parametrize(
        "host",
        ["metadata.google.internal", "METADATA.google.internal.", "metadata.goog", "metadata"],
    )
    @pytest.mark.parametrize("targets", ["public", "any"])
    def test_the_metadata_names_are_refused_whatever_they_resolve_to(
        self, host: str, targets: Any
    ) -> None:
        """Even a resolver that says public: never looked up, never sent to."""
        resolver = ScriptedResolver([[PUBLIC_IP]])
        sender = RecordingSender()
        policy = WebhookUrlPolicy(targets, resolve=resolver, allowed_networks=["0.0.0.0/0"])
        error = refused(deliver(f"https://{host}/computeMetadata/v1/", policy, sender))
        assert "metadata server" in error
        assert sender.sent == []
        assert resolver.lookups == []

    @pytest.mark.parametrize(
        "address",
        ["169.254.169.254", "169.254.0.1", "fe80::a9fe:a9fe", "fd00:ec2::254", "fd20:ce::254"],
    )
    @pytest.mark.parametrize("targets", ["public", "any"])
    def test_metadata_and_link_local_addresses_are_refused_even_when_allow_listed(
        self, address: str, targets: Any
    ) -> None:
        """No mode and no allow-list reaches them."""
        resolver = ScriptedResolver([[address]])
        policy = WebhookUrlPolicy(targets, resolve=resolver, allowed_networks=["0.0.0.0/0", "::/0"])
        sender = RecordingSender()
        assert "never a webhook receiver" in refused(deliver(f"https://{HOST}/", policy, sender))
        assert sender.sent == []


class TestDevelopmentTargets:
    def test_any_delivers_to_loopback(self) -> None:
        """Locally, http to a receiver on 127.0.0.1 works, by address and by a name."""
        with running_receiver(always(204)) as receiver:
            by_address = deliver(receiver.url, WebhookUrlPolicy("any"), HttpxSender(timeout_s=5))
            by_name = deliver(
                receiver.url_for(HOST),
                WebhookUrlPolicy("any", resolve=ScriptedResolver([["::ffff:127.0.0.1"]])),
                HttpxSender(timeout_s=5),
            )
            assert len(receiver.received) == 2
        assert [d.status_code for d in (*by_address, *by_name)] == [204, 204]

    @pytest.mark.parametrize(
        "url",
        [
            "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://metadata.google.internal/computeMetadata/v1/",
            f"http://{HOST}/",  # the test's resolver maps it to 169.254.169.254
        ],
    )
    def test_any_never_reaches_the_metadata_server(self, url: str) -> None:
        """Development targets stop at the metadata server too."""
        sender = RecordingSender()
        policy = WebhookUrlPolicy("any", resolve=ScriptedResolver([["169.254.169.254"]]))
        refused(deliver(url, policy, sender))
        assert sender.sent == []


class TestAllowList:
    def test_an_allow_listed_internal_receiver_gets_deliveries_under_public(
        self, ca: LocalCA
    ) -> None:
        """WEBHOOK_TARGETS=public with WEBHOOK_ALLOWED_NETWORKS=127.0.0.1/32, through the
        factory: the receiver on 127.0.0.1 gets the POST; without the setting it is refused."""
        with running_receiver(always(200), tls=ca.server_for(["127.0.0.1"])) as receiver:
            allowed = Settings(
                app_env="test", webhook_targets="public", webhook_allowed_networks="127.0.0.1/32"
            )
            delivered = deliver(
                receiver.url, url_policy(allowed), HttpxSender(timeout_s=5, verify=ca.client)
            )
            assert len(receiver.received) == 1
            plain = Settings(app_env="test", webhook_targets="public")
            blocked = deliver(
                receiver.url, url_policy(plain), HttpxSender(timeout_s=5, verify=ca.client)
            )
            assert len(receiver.received) == 1
        assert [d.status_code for d in delivered] == [200]
        assert "127.0.0.1 is a loopback address" in refused(blocked)

    def test_the_allow_list_admits_its_networks_only(self) -> None:
        """10.8.0.0/16 listed: 10.8.1.2 passes, 10.9.0.1 does not."""
        policy = WebhookUrlPolicy(
            "public",
            resolve=ScriptedResolver([["10.8.1.2"], ["10.9.0.1"]]),
            allowed_networks=["10.8.0.0/16"],
        )
        sender = RecordingSender()
        assert [d.status_code for d in deliver(f"https://{HOST}/", policy, sender)] == [200]
        assert sender.sent[0].addresses == ("10.8.1.2",)
        refused(deliver(f"https://{HOST}/", policy, sender))
        assert len(sender.sent) == 1


def _answer(raw: bytes) -> Callable[[socket.socket], None]:
    return lambda connection: connection.sendall(raw)


class TestRedirects:
    @pytest.mark.parametrize(
        "location",
        [
            "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
            "SECOND",  # another receiver the policy would allow
        ],
    )
    def test_a_redirect_is_the_final_answer_and_is_not_followed(self, location: str) -> None:
        """The 302 is recorded as the attempt's answer (final, not retried); the place it
        points at gets nothing."""
        with running_receiver(always(200)) as second:
            target = second.url if location == "SECOND" else location
            redirect = (
                f"HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
            )
            with scripted(_answer(redirect)) as first:
                started = time.monotonic()
                deliveries = deliver(first.url(), WebhookUrlPolicy("any"), HttpxSender(timeout_s=5))
                assert len(first.requests) == 1
            assert second.received == []
        assert [(d.status_code, d.error) for d in deliveries] == [(302, None)]
        assert time.monotonic() - started < 2


class TestBounded:
    def test_a_huge_response_body_is_not_read(self) -> None:
        """The receiver offers a gigabyte; the status comes back at once and the sender stops
        the transfer long before the end."""
        sent: list[int] = []

        def flood(connection: socket.socket) -> None:
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
            chunk, total = b"x" * 65536, 0
            try:
                while total < 1 << 30:
                    connection.sendall(chunk)
                    total += len(chunk)
            except OSError:
                pass
            sent.append(total)

        with scripted(flood) as server:
            started = time.monotonic()
            status = post_once(server.url(), timeout_s=5)
            elapsed = time.monotonic() - started
            assert server.done.wait(10)
        assert status == 200
        assert elapsed < 2
        assert sent[0] < 64 << 20

    def test_a_trickling_receiver_is_cut_off_at_the_timeout(self) -> None:
        """A byte every 0.1 s never trips a per-read timeout of 1 s; the attempt still ends
        at about 1 s in all, as a failure."""
        stop = threading.Event()

        def trickle(connection: socket.socket) -> None:
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                    connection.sendall(bytes([byte]))
                    if stop.wait(0.1):
                        return
            except OSError:
                return

        with scripted(trickle) as server:
            started = time.monotonic()
            with pytest.raises(SendFailed, match="no answer within 1 s"):
                post_once(server.url(), timeout_s=1)
            elapsed = time.monotonic() - started
            stop.set()
        assert 0.9 < elapsed < 2.5

    def test_a_receiver_that_never_answers_times_out(self) -> None:
        """Accepts, reads the request, says nothing."""
        stop = threading.Event()

        def say_nothing(_connection: socket.socket) -> None:
            stop.wait(10)

        with scripted(say_nothing) as server:
            started = time.monotonic()
            with pytest.raises(SendFailed, match=r"no answer within 0\.5 s"):
                post_once(server.url(), timeout_s=0.5)
            stop.set()
        assert time.monotonic() - started < 2


def post_once(url: str, *, timeout_s: float) -> int:
    target = WebhookUrlPolicy("any").resolve(url)
    sender = HttpxSender(timeout_s=timeout_s)
    try:
        return sender.post(target, b"{}", {})
    finally:
        sender.close()


def test_the_target_carries_every_checked_address_in_the_resolver_order() -> None:
    """Duplicates (one per protocol or family) are dropped; the order is kept."""
    resolver = ScriptedResolver([[PUBLIC_IP, "2606:4700::1", PUBLIC_IP]])
    target = WebhookUrlPolicy("public", resolve=resolver).resolve(f"https://{HOST}:8443/x?y=1")
    assert target == WebhookTarget(
        url=f"https://{HOST}:8443/x?y=1", host=HOST, addresses=(PUBLIC_IP, "2606:4700::1")
    )
    assert resolver.lookups == [(HOST, 8443)]
