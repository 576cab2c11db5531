"""Building a Firestore client, and what the Firestore adapters share: error translation,
document id rules, timestamps, retry policies, and transactions for changes that span
documents."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import google.auth.exceptions
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import firestore
from google.cloud.firestore import DocumentReference, DocumentSnapshot, Transaction

from dal.errors import DalError, StoreUnavailable

# Errors that say "the service cannot answer now; the same call may work later". Aborted is a
# transaction that lost to concurrent writers more often than its attempts allowed.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    gexc.InternalServerError,
    gexc.TooManyRequests,  # ResourceExhausted (quota) is a subclass
    gexc.Aborted,
    google.auth.exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)

# Firestore's rules for a document id: not empty, no "/", not "." or "..", not __name__-like,
# at most 1500 bytes.
_RESERVED_ID = re.compile(r"^__.*__$", re.DOTALL)
MAX_ID_BYTES = 1500


def make_firestore_client(project: str, database: str = "(default)") -> firestore.Client:
    """A client for `database` in `project`. With FIRESTORE_EMULATOR_HOST set it talks to that
    emulator without credentials; otherwise it uses Application Default Credentials."""
    try:
        return firestore.Client(project=project, database=database)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise RuntimeError(
            f"no Google credentials for Firestore (project {project!r}): set "
            "FIRESTORE_EMULATOR_HOST=HOST:PORT to use the emulator, or configure Application "
            "Default Credentials (`gcloud auth application-default login`, or a service "
            f"account on Cloud Run): {exc}"
        ) from exc


def emulator_host() -> str | None:
    return os.environ.get("FIRESTORE_EMULATOR_HOST") or None


def read_retry(deadline_s: float) -> gretry.Retry:
    """Retry transient errors of one read or idempotent write for at most `deadline_s`
    (the library's own defaults keep trying for 60-300 s)."""
    return gretry.Retry(
        predicate=gretry.if_transient_error,
        initial=0.1,
        maximum=2.0,
        multiplier=2.0,
        timeout=deadline_s,
    )


def write_retry(deadline_s: float) -> gretry.Retry:
    """Retry one commit (a transaction's, or a single write's) for at most `deadline_s`, and,
    as the library's own commit policy does, only on the errors that say it was not applied
    (ResourceExhausted, ServiceUnavailable): a write whose answer was lost is not sent again,
    since a second try of a conditional write would fail against its own first one."""
    return gretry.Retry(
        predicate=gretry.if_exception_type(gexc.ResourceExhausted, gexc.ServiceUnavailable),
        initial=0.1,
        maximum=2.0,
        multiplier=2.0,
        timeout=deadline_s,
    )


class BoundedTransaction(Transaction):  # type: ignore[misc]  # the library is untyped
    """A transaction whose every call (begin, reads, commit, rollback) gives up after
    `deadline_s`, retries included.

    The library gives a transaction's calls its own defaults: begin and commit retry an
    unreachable Firestore for 60 s, reads for 300 s, and it offers no way to pass a deadline
    through `firestore.transactional`. A caller (an API request, a push delivery) must hear
    "unavailable" long before that, so begin, commit and rollback are re-issued here with
    a deadline, and transaction bodies read through `get_document`.
    """

    def __init__(self, client: firestore.Client, *, deadline_s: float) -> None:
        super().__init__(client, max_attempts=1)
        self.deadline_s = deadline_s
        self._idempotent_retry = read_retry(deadline_s)
        self._commit_retry = write_retry(deadline_s)

    def get_document(self, ref: DocumentReference) -> DocumentSnapshot:
        snapshot: DocumentSnapshot = ref.get(
            transaction=self, retry=self._idempotent_retry, timeout=self.deadline_s
        )
        return snapshot

    def _begin(self, retry_id: bytes | None = None) -> None:
        if self.in_progress:
            raise ValueError("the transaction has already begun")
        response = self._client._firestore_api.begin_transaction(
            request={
                "database": self._client._database_string,
                "options": self._options_protobuf(retry_id),
            },
            metadata=self._client._rpc_metadata,
            retry=self._idempotent_retry,
            timeout=self.deadline_s,
        )
        self._id = response.transaction

    def _rollback(self) -> None:
        if not self.in_progress:
            raise ValueError("no transaction in progress to roll back")
        try:
            self._client._firestore_api.rollback(
                request={"database": self._client._database_string, "transaction": self._id},
                metadata=self._client._rpc_metadata,
                retry=self._idempotent_retry,
                timeout=self.deadline_s,
            )
        finally:
            self._clean_up()

    def _commit(self) -> list[Any]:
        if not self.in_progress:
            raise ValueError("no transaction in progress to commit")
        response = self._client._firestore_api.commit(
            request={
                "database": self._client._database_string,
                "writes": self._write_pbs,
                "transaction": self._id,
            },
            metadata=self._client._rpc_metadata,
            retry=self._commit_retry,
            timeout=self.deadline_s,
        )
        self._clean_up()
        self.write_results = list(response.write_results)
        self.commit_time = response.commit_time
        return self.write_results


def run_transaction(
    client: firestore.Client,
    function: Callable[..., Any],
    *args: Any,
    max_attempts: int,
    deadline_s: float,
    backoff_s: float = 0.05,
    max_backoff_s: float = 2.0,
) -> Any:
    """Run `function(transaction, *args)` in a Firestore transaction (firestore.transactional),
    retrying it up to `max_attempts` times when it loses to concurrent transactions (ABORTED),
    with jittered exponential backoff between attempts.

    Only changes that span several documents use this (a job with its idempotency key, an API
    key with its hash): a change to one document is a conditional write instead (see
    dal.firestore.job_store), which takes no lock. Firestore in its default pessimistic mode,
    and the emulator, lock what a transaction reads and resolve contention by failing or
    delaying contenders (https://cloud.google.com/firestore/docs/transaction-data-contention);
    the emulator breaks a lock deadlock only by timing out (~2 s) and aborts every contender
    together, which then collide again in lock step. The library's own retry restarts at once;
    a random pause here lets one go first, and lost attempts are retried for `deadline_s` even
    past `max_attempts`.
    The wrapper firestore.transactional returns also keeps the ids of the transaction it runs,
    so it is made per call: a shared one would mix up concurrent calls from several threads.
    Exceptions raised by `function` (DalErrors, ValueError) end the transaction at once.
    Each call of each attempt gives up after `deadline_s` (BoundedTransaction).
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        transaction = BoundedTransaction(client, deadline_s=deadline_s)
        try:
            return firestore.transactional(function)(transaction, *args)
        except (gexc.Aborted, ValueError) as exc:
            aborted = isinstance(exc, gexc.Aborted) or isinstance(exc.__cause__, gexc.Aborted)
            patience_left = time.monotonic() - started < deadline_s
            if not aborted or (attempt >= max_attempts and not patience_left):
                raise
        pause = min(max_backoff_s, backoff_s * 2 ** min(attempt - 1, 16))
        time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret  # nosec B311


def is_valid_document_id(value: str) -> bool:
    return (
        bool(value)
        and "/" not in value
        and value not in (".", "..")
        and _RESERVED_ID.match(value) is None
        and len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES
    )


def check_prefix(prefix: str) -> str:
    if not is_valid_document_id(prefix + "x"):
        raise ValueError(f"collection prefix {prefix!r} cannot start a Firestore collection id")
    return prefix


def hashed_id(*parts: str) -> str:
    """A valid document id standing for `parts` (any strings): the hex SHA-256 of them joined
    by NUL."""
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def to_timestamp(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetimes are not stored")
    return value.astimezone(UTC)


def from_timestamp(value: Any) -> datetime | None:
    """A stored timestamp as a plain tz-aware UTC datetime (Firestore keeps microseconds; the
    client hands back a DatetimeWithNanoseconds, which we do not let leak)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=UTC,
    )


def required_timestamp(value: Any) -> datetime:
    moment = from_timestamp(value)
    if moment is None:
        raise TypeError("a required timestamp is missing")
    return moment


def _transient_cause(exc: BaseException) -> BaseException | None:
    """The first transient error in `exc`'s chain. The transaction helper wraps exhausted
    attempts in a ValueError, and a failed begin surfaces as the ValueError of the rollback
    that followed it, with the real error as its context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TRANSIENT_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def translate_errors(store: str, what: str) -> Iterator[None]:
    """Turn the Firestore client's transient errors into StoreUnavailable; DalErrors and the
    adapter's own ValueErrors pass through."""
    try:
        yield
    except DalError:
        raise
    except Exception as exc:
        cause = _transient_cause(exc)
        if cause is None:
            raise
        target = f" at {emulator_host()} (FIRESTORE_EMULATOR_HOST)" if emulator_host() else ""
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise StoreUnavailable(
            f"{store} unavailable: Firestore{target} did not complete {what}: {detail}"
        ) from exc
