"""Builds adapters from settings. Each process's wiring function composes these; nothing here
runs at import, and vendor libraries are imported only for the adapters actually chosen."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dal.errors import UnsupportedAdapter
from dal.ports import (
    ApiKeyStore,
    BlobStore,
    FairLine,
    JobEvents,
    JobQueue,
    JobStore,
    KeyRevocations,
    RateLimiter,
    RequestCache,
)
from dal.records import Job
from dal.settings import Settings
from dal.url_signing import HmacUrlSigner

log = logging.getLogger(__name__)

Closers = list[Callable[[], None]]


def close_all(closers: Closers) -> None:
    """Run shutdown hooks newest first, logging (not raising) their failures; empties the list."""
    for closer in reversed(closers):
        try:
            closer()
        except Exception:
            log.warning("error while shutting down", exc_info=True)
    closers.clear()


def build_stores(settings: Settings, closers: Closers) -> tuple[JobStore, ApiKeyStore]:
    """The job store and the API key store, which always live in the same database."""
    if settings.job_store == "memory":
        from dal.memory import MemoryApiKeyStore, MemoryJobStore

        return MemoryJobStore(), MemoryApiKeyStore()
    if settings.job_store == "sql":
        from dal.sql import SqlApiKeyStore, SqlJobStore, create_sql_engine, upgrade

        engine = create_sql_engine(
            settings.resolved_database_url,
            connect_timeout_s=settings.database_connect_timeout_s,
        )
        closers.append(engine.dispose)
        # Migrations are idempotent and serialised across processes; every process applies
        # them at start so a fresh database needs no separate step.
        upgrade(engine)
        return SqlJobStore(engine), SqlApiKeyStore(engine)
    if settings.job_store == "firestore":
        from dal.firestore import FirestoreApiKeyStore, FirestoreJobStore
        from dal.firestore.client import make_firestore_client

        client = make_firestore_client(settings.gcp_project, settings.firestore_database)
        closers.append(client.close)
        prefix = settings.firestore_collection_prefix
        return (
            FirestoreJobStore(
                client, collection_prefix=prefix, timeout_s=settings.firestore_timeout_s
            ),
            FirestoreApiKeyStore(
                client, collection_prefix=prefix, timeout_s=settings.firestore_timeout_s
            ),
        )
    raise UnsupportedAdapter("JOB_STORE", str(settings.job_store), "memory, sql, firestore")


def build_url_signer(settings: Settings) -> HmacUrlSigner:
    return HmacUrlSigner(
        settings.url_signing_secret.get_secret_value(), base_url=settings.public_base_url
    )


def build_blob_store(settings: Settings, signer: HmacUrlSigner) -> BlobStore:
    if settings.blob_store == "filesystem":
        from dal.filesystem import FilesystemBlobStore

        store = FilesystemBlobStore(settings.resolved_blob_dir, signer)
        store.ping()
        return store
    if settings.blob_store == "memory":
        from dal.memory import MemoryBlobStore

        return MemoryBlobStore(signer)
    if settings.blob_store == "gcs":
        from dal.gcs.factory import build_gcs_blob_store

        return build_gcs_blob_store(settings)
    raise UnsupportedAdapter("BLOB_STORE", str(settings.blob_store), "memory, filesystem, gcs")


def build_redis_client(settings: Settings, closers: Closers) -> Any | None:
    """One Redis client (thread-safe, pooled) for everything in a process that uses Redis."""
    if "redis" not in (settings.rate_limiter, settings.request_cache, settings.job_events):
        return None
    from dal.redis.client import make_redis_client

    client = make_redis_client(settings.redis_url)
    closers.append(client.close)
    return client


def build_key_revocations(
    settings: Settings, *, redis_client: Any | None = None
) -> KeyRevocations | None:
    """The channel that tells every process of the deployment that a key was revoked, or
    None where there is none: then no process keeps verified keys (api.api_keys)."""
    if redis_client is not None:
        # Every API process and every admin command of the deployment share this Redis.
        from dal.redis import RedisKeyRevocations

        return RedisKeyRevocations(
            redis_client, channel=f"{settings.redis_key_prefix}key-revocations"
        )
    if settings.job_store == "memory":
        # The keys live in this process: so does every revocation.
        from dal.memory import LocalKeyRevocations

        return LocalKeyRevocations()
    if settings.job_store == "sql":
        from sqlalchemy.engine import make_url

        url = make_url(settings.resolved_database_url)
        if url.get_backend_name() == "sqlite":
            if url.database in (None, "", ":memory:"):
                from dal.memory import LocalKeyRevocations

                return LocalKeyRevocations()
            from dal.sql.key_revocations import MarkerFileKeyRevocations

            return MarkerFileKeyRevocations.beside(Path(url.database))
    # PostgreSQL or Firestore without Redis: processes on many hosts and no channel.
    return None


def build_job_events(settings: Settings, *, redis_client: Any | None = None) -> JobEvents | None:
    """The job-events bus, or None (JOB_EVENTS=none: waiters only re-read the job store)."""
    if settings.job_events == "memory":
        from dal.memory import MemoryJobEvents

        return MemoryJobEvents()
    if settings.job_events == "redis":
        from dal.redis import RedisJobEvents

        if redis_client is None:
            raise ValueError("JOB_EVENTS=redis needs a Redis client")
        return RedisJobEvents(redis_client, channel=f"{settings.redis_key_prefix}job-events")
    if settings.job_events == "none":
        return None
    raise UnsupportedAdapter("JOB_EVENTS", str(settings.job_events), "memory, redis, none")


def build_rate_limiter(
    settings: Settings,
    *,
    limit: int,
    period_s: float,
    burst: int,
    scope: str,
    redis_client: Any | None = None,
) -> RateLimiter:
    if settings.rate_limiter == "memory":
        from dal.memory import MemoryRateLimiter

        return MemoryRateLimiter(limit=limit, period_s=period_s, burst=burst)
    if settings.rate_limiter == "redis":
        from dal.redis import RedisRateLimiter
        from dal.redis.client import make_redis_client

        return RedisRateLimiter(
            redis_client or make_redis_client(settings.redis_url),
            limit=limit,
            period_s=period_s,
            burst=burst,
            prefix=f"{settings.redis_key_prefix}rl:{scope}:",
        )
    raise UnsupportedAdapter("RATE_LIMITER", str(settings.rate_limiter), "memory, redis")


def build_request_cache(settings: Settings, *, redis_client: Any | None = None) -> RequestCache:
    if settings.request_cache == "memory":
        from dal.memory import MemoryRequestCache

        return MemoryRequestCache()
    if settings.request_cache == "redis":
        from dal.redis import RedisRequestCache
        from dal.redis.client import make_redis_client

        return RedisRequestCache(
            redis_client or make_redis_client(settings.redis_url),
            prefix=f"{settings.redis_key_prefix}cache:",
        )
    raise UnsupportedAdapter("REQUEST_CACHE", str(settings.request_cache), "memory, redis")


def build_fair_line(settings: Settings, *, redis_client: Any | None = None) -> FairLine:
    """The line for the GPUs: in Redis wherever requests share a Redis cache (every process of
    the deployment sees one line), else in this process's memory (the embedded profile)."""
    if settings.request_cache == "redis":
        from dal.redis import RedisFairLine

        if redis_client is None:
            raise ValueError("a Redis fair line needs a Redis client")
        return RedisFairLine(redis_client, prefix=settings.redis_key_prefix)
    from dal.memory import MemoryFairLine

    return MemoryFairLine()


class LazyJobQueue:
    """A queue built at its first enqueue. A worker publishes only when a job it ends lets the
    next ones in line through; until then it holds no publisher (nor needs credentials for
    one)."""

    def __init__(self, build: Callable[[], JobQueue]) -> None:
        self._build = build
        self._queue: JobQueue | None = None
        self._lock = threading.Lock()

    def enqueue(self, job: Job) -> None:
        with self._lock:
            if self._queue is None:
                self._queue = self._build()
        self._queue.enqueue(job)


def build_broker_queue(settings: Settings, closers: Closers) -> JobQueue:
    """The queue to separate workers: JOB_QUEUE=pubsub or celery. The API and the admin
    command's outbox sweep publish through it."""
    if settings.job_queue == "pubsub":
        from dal.pubsub import PubSubJobQueue
        from dal.pubsub.client import make_publisher, topic_path

        publisher = make_publisher()
        closers.append(lambda: publisher.stop())
        return PubSubJobQueue(publisher, topic_path(settings.gcp_project, settings.pubsub_topic))
    if settings.job_queue == "celery":
        # Sends tasks by name: the API imports neither the worker's task module nor torch.
        from dal.celery import CeleryJobQueue, make_celery_app

        celery_app = make_celery_app(settings)
        closers.append(celery_app.close)
        return CeleryJobQueue(celery_app, queue=settings.celery_queue)
    raise UnsupportedAdapter("JOB_QUEUE", str(settings.job_queue), "pubsub, celery")
