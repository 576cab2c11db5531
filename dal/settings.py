"""One typed settings object for every process, read from the environment.

`APP_ENV` picks a profile that fills in every adapter choice left unset; each choice and limit
also has its own variable (the field name in upper case) that overrides the profile.
Production profiles (staging, prod) refuse fake adapters and placeholder secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dal.failpoints import parse_failpoints

AppEnv = Literal["local", "test", "emulator", "selfhosted", "staging", "prod"]
JobStoreKind = Literal["memory", "sql", "firestore"]
BlobStoreKind = Literal["memory", "filesystem", "gcs"]
JobQueueKind = Literal["memory", "inline", "pubsub", "celery"]
RateLimiterKind = Literal["memory", "redis"]
RequestCacheKind = Literal["memory", "redis"]
JobEventsKind = Literal["memory", "redis", "none"]
PushAuthKind = Literal["oidc", "none"]
# public: https to public addresses only; any: also http, and loopback/private hosts.
WebhookTargets = Literal["public", "any"]
# Profiles whose webhooks reach public addresses only unless WEBHOOK_TARGETS says otherwise:
# production, and self-hosted installs, which run on cloud VMs beside a metadata server and a
# VPC as often as not.
PUBLIC_WEBHOOK_ENVS: frozenset[str] = frozenset({"staging", "prod", "selfhosted"})

PRODUCTION_ENVS: frozenset[str] = frozenset({"staging", "prod"})

# Values that ship in this file so development needs no setup. Any of them in a production
# profile is a misconfiguration, refused at start.
PLACEHOLDER_MARKER = "insecure-dev-placeholder"

_CLOUD = {
    "job_store": "firestore",
    "blob_store": "gcs",
    "job_queue": "pubsub",
    "rate_limiter": "redis",
    "request_cache": "redis",
    "job_events": "redis",
}
PROFILES: dict[str, dict[str, str]] = {
    "local": {
        "job_store": "sql",
        "blob_store": "filesystem",
        "job_queue": "inline",
        "rate_limiter": "memory",
        "request_cache": "memory",
        # Jobs end in the API process itself, which wakes its waiters directly.
        "job_events": "none",
        "push_auth": "none",
    },
    "test": {
        "job_store": "memory",
        "blob_store": "memory",
        "job_queue": "memory",
        "rate_limiter": "memory",
        "request_cache": "memory",
        "job_events": "memory",
        "push_auth": "none",
    },
    # The emulators send no OIDC token with push requests.
    "emulator": {**_CLOUD, "push_auth": "none"},
    # A GPU VM or cluster without Pub/Sub: Celery on Redis, PostgreSQL, files (or GCS).
    "selfhosted": {
        "job_store": "sql",
        "blob_store": "filesystem",
        "job_queue": "celery",
        "rate_limiter": "redis",
        "request_cache": "redis",
        "job_events": "redis",
        "push_auth": "none",
    },
    "staging": {**_CLOUD, "push_auth": "oidc"},
    "prod": {**_CLOUD, "push_auth": "oidc"},
}


def parse_networks(value: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated CIDRs. Host bits set (10.0.0.1/8) is refused as a likely typo. Raises
    ValueError."""
    items = (item.strip() for item in (value or "").split(","))
    return tuple(ipaddress.ip_network(item) for item in items if item)


_ADAPTER_FIELDS = (
    "job_store",
    "blob_store",
    "job_queue",
    "rate_limiter",
    "request_cache",
    "job_events",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", case_sensitive=False, validate_default=True
    )

    app_env: AppEnv = "local"

    # --- adapters (None: from the profile) ---
    job_store: JobStoreKind | None = None
    blob_store: BlobStoreKind | None = None
    job_queue: JobQueueKind | None = None
    rate_limiter: RateLimiterKind | None = None
    request_cache: RequestCacheKind | None = Field(
        default=None, description="Idempotency keys and finished-request dedupe."
    )
    job_events: JobEventsKind | None = Field(
        default=None,
        description="How workers tell API processes a job ended, so waiting requests answer "
        "at once; `none`: they re-read the job store every PREFER_WAIT_POLL_S.",
    )

    # --- where things live ---
    data_dir: Path = Path(".data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite in DATA_DIR."
    )
    database_connect_timeout_s: int = Field(
        default=5, ge=2, le=60, description="PostgreSQL: give up on a connection attempt after."
    )
    blob_dir: Path | None = Field(default=None, description="Default: DATA_DIR/blobs.")
    public_base_url: str | None = Field(
        default=None,
        description="Origin put in front of API-served blob URLs; default: the request's own.",
    )

    # --- Google Cloud (emulators are found through PUBSUB_EMULATOR_HOST,
    #     FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST, read by Google's libraries) ---
    gcp_project: str = "local-project"
    firestore_database: str = "(default)"
    firestore_collection_prefix: str = Field(
        default="", description="Prefix for collection names (isolates tests and stacks)."
    )
    firestore_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Deadline of each Firestore call, retries included (then 503 / redelivery).",
    )
    gcs_bucket: str = "txt2img-images"
    gcs_signing_service_account: str | None = Field(
        default=None,
        description="Sign URLs through IAM signBlob as this account (Cloud Run, no key file).",
    )
    gcs_signing_key_file: Path | None = Field(
        default=None, description="Service-account JSON key to sign URLs with (emulator)."
    )
    gcs_timeout_s: float = Field(default=30.0, gt=0)
    gcs_retry_timeout_s: float = Field(
        default=30.0, ge=0, description="Total time Cloud Storage calls may spend retrying."
    )
    pubsub_topic: str = "jobs"
    pubsub_dead_letter_topic: str = "jobs-dead-letter"
    pubsub_dead_letter_subscription: str = "jobs-dead-letter"
    pubsub_jobs_subscription: str = Field(
        default="jobs-worker", description="The jobs subscription (pushes, or pull mode)."
    )
    pubsub_dead_letter_recorder_subscription: str = Field(
        default="jobs-dead-letter-recorder",
        description="Marks dead-lettered jobs failed (pushes, or pull mode).",
    )
    pull_max_in_flight: int = Field(default=2, ge=1, le=64)
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)

    # --- Celery (JOB_QUEUE=celery) ---
    celery_broker_url: str | None = Field(
        default=None, description="Default: REDIS_URL. The broker Celery publishes tasks to."
    )
    celery_queue: str = "txt2img-jobs"
    celery_visibility_timeout_s: int = Field(
        default=3600, ge=10, description="Above the longest generation, or tasks run twice."
    )
    celery_worker_concurrency: int = Field(default=2, ge=1, le=64)
    celery_retry_backoff_s: float = Field(default=10.0, ge=0)
    celery_retry_backoff_max_s: float = Field(default=600.0, ge=0)
    celery_dead_letter_key: str = Field(
        default="txt2img:celery:dead-letters",
        description="Redis list holding tasks that ran out of attempts (MAX_DELIVERY_ATTEMPTS).",
    )

    # --- Redis ---
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "txt2img:"
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    dedupe_seeded_requests: bool = True

    # --- serving ---
    # How long an API process may keep a key it verified without reading the store again.
    # A revocation through `txt2img-admin keys revoke` reaches every process at once through
    # the deployment's revocation channel whatever this is; this bounds only revocations made
    # in the database directly. 0: read the store on every request.
    key_cache_ttl_s: float = Field(default=30.0, ge=0, le=3600)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- observability (docs/operations.md) ---
    log_format: Literal["json", "text"] | None = Field(
        default=None,
        description="json: Cloud Logging lines; text: for a terminal. Default: text with "
        "APP_ENV=local or test, json otherwise.",
    )
    # One log line per HTTP request from the server (uvicorn's access log). Off by default:
    # Cloud Run writes a request log of its own for every request (method, URL, status,
    # latency: https://cloud.google.com/run/docs/logging), txt2img_http_request_seconds counts
    # every request by route and status, and a line per request costs the serving process
    # about a third of a cheap request's CPU (docs/performance.md).
    access_log: bool = False
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Also serve /metrics on this port (a scraper sidecar's); the Celery worker "
        "has no HTTP app and uses 9464 when unset. 0: never.",
    )
    metrics_bearer_token: SecretStr | None = Field(
        default=None, description="When set, /metrics on the main port requires this token."
    )
    otel_enabled: bool = Field(
        default=False, description="Export OpenTelemetry spans over OTLP (the `otel` extra)."
    )

    # --- secrets ---
    bootstrap_api_key: SecretStr | None = None
    bootstrap_api_key_owner: str = "bootstrap"
    api_key_pepper: SecretStr = SecretStr(f"{PLACEHOLDER_MARKER}-pepper")
    url_signing_secret: SecretStr = SecretStr(f"{PLACEHOLDER_MARKER}-url-signing")
    webhook_signing_secret: SecretStr | None = Field(
        default=None,
        description="Master secret; each owner signs with HMAC(it, owner). Default: derived "
        "from URL_SIGNING_SECRET.",
    )

    # --- model and generation ---
    model_path: Path | None = Field(
        default=None, description="diffusers folder; default: the tiny model (built on demand)."
    )
    model_id: str | None = Field(default=None, description="Default: the model folder's name.")
    default_image_size: int | None = Field(
        default=None, ge=64, le=1024, description="Default: the model's own, else 512."
    )
    default_steps: int = Field(default=25, ge=1, le=50)
    default_guidance_scale: float = Field(default=7.5, ge=0, le=20)
    warm_up: bool = True

    # --- limits ---
    max_body_bytes: int = Field(default=16_384, ge=1024)
    signed_url_ttl_s: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    prefer_wait_max_s: float = Field(
        default=30.0, ge=0, le=300, description="Longest `Prefer: wait=N` a GET may hold."
    )
    prefer_wait_poll_s: float = Field(
        default=0.5, gt=0, description="How often a held GET re-reads the job store."
    )
    sync_wait_max_s: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description=(
            "How long a synchronous call (the OpenAI Images and AUTOMATIC1111 dialects) holds "
            "the request for its job; past it the answer names the job to fetch natively. Keep "
            "it under the platform's request timeout."
        ),
    )
    sync_cancel_on_disconnect: bool = Field(
        default=True,
        description="Cancel the job of a synchronous call whose client hangs up before it ends.",
    )
    events_stream_max_s: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description=(
            "How long one GET /v1/jobs/{id}/events stream lasts before the server ends it "
            "(the client reconnects with Last-Event-ID). Keep it under the platform's request "
            "timeout (Cloud Run: the API service's timeout), which would cut it instead."
        ),
    )
    list_max_limit: int = Field(default=100, ge=1, le=1000)
    rate_limit_submit_per_minute: int = Field(default=30, ge=1)
    rate_limit_submit_burst: int = Field(default=10, ge=1)
    rate_limit_read_per_minute: int = Field(default=600, ge=1)
    rate_limit_read_burst: int = Field(default=120, ge=1)
    # Per-owner quotas besides the rate limit (0: unlimited); a key may override them.
    quota_max_in_flight: int = Field(
        default=0, ge=0, description="Jobs an owner may have queued or running at once."
    )
    quota_images_per_day: int = Field(
        default=0, ge=0, description="Images an owner's accepted jobs may ask for per UTC day."
    )

    # --- outbox: jobs recorded but never published (the API died in between) ---
    outbox_sweep_interval_s: float = Field(
        default=15.0, ge=0, description="How often each API process sweeps; 0: never."
    )
    outbox_grace_s: float = Field(
        default=60.0, ge=1, description="Age after which an unpublished queued job is swept."
    )
    outbox_give_up_s: float = Field(
        default=900.0, ge=1, description="Age after which it is failed (enqueue_failed) instead."
    )
    failpoints: str | None = Field(
        default=None,
        description="Fault injection for tests, e.g. after_job_recorded=exit; never in production.",
    )

    # --- webhooks ---
    webhook_targets: WebhookTargets | None = Field(
        default=None,
        description="`public`: https to public addresses only (default in staging, prod and "
        "selfhosted); `any`: also http and loopback/private hosts (default elsewhere). Never "
        "the metadata server.",
    )
    webhook_allowed_networks: str | None = Field(
        default=None,
        description="Comma-separated CIDRs (10.8.0.0/16,fd12::/48) webhooks may reach beside "
        "public addresses: internal receivers. Never the metadata server or link-local.",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_base_s: float = Field(default=1.0, ge=0)
    webhook_backoff_max_s: float = Field(default=60.0, ge=0)
    webhook_workers: int = Field(default=2, ge=1, le=32, description="Delivery threads.")
    webhook_redrive_interval_s: float = Field(
        default=60.0, ge=0, description="How often owed deliveries are looked for; 0: at start."
    )
    webhook_redrive_window_s: float = Field(
        default=86_400.0, ge=60, description="Jobs older than this are no longer redriven."
    )

    # --- batching and the model on the GPU ---
    max_batch_size: int = Field(default=8, ge=1, le=64)
    max_batch_wait_ms: float = Field(default=20.0, ge=0, le=5000)
    torch_compile: bool = False
    pipeline_process: bool = Field(
        default=True,
        description="Run the diffusion pipeline in a child process, so that request handling "
        "never holds the GIL the pipeline needs (see docs/performance.md).",
    )
    pipeline_cpus: str | None = Field(
        default=None,
        pattern=r"^(auto|[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)$",
        description="CPU pipeline only: pin the pipeline process to these CPUs and this "
        "process to the others; `auto`: all but the last one.",
    )
    torch_threads: int = Field(
        default=0, ge=0, le=256, description="Intra-op CPU threads for torch; 0: one per core."
    )
    vae_slicing_min_batch: int = Field(
        default=4, ge=1, description="Decode latents one image at a time from this batch size."
    )

    # --- worker ---
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=8081, ge=1, le=65535)
    push_auth: PushAuthKind | None = Field(
        default=None, description="Verify Pub/Sub's OIDC token on push requests."
    )
    push_audience: str | None = Field(
        default=None, description="Expected OIDC audience (the push endpoint URL)."
    )
    push_service_account: str | None = Field(
        default=None, description="Expected OIDC email: the push subscription's account."
    )
    push_oidc_certs_url: str = Field(
        default="https://www.googleapis.com/oauth2/v1/certs",
        description="Where the keys that sign push tokens are published.",
    )
    # A worker holds a running job under a lease it renews every JOB_HEARTBEAT_S, whatever the
    # pipeline is doing; the sweeper takes back a job whose lease lapsed (docs/operations.md:
    # "Leases and recovery" has the arithmetic).
    job_lease_s: float = Field(default=30.0, ge=5)
    # Unset: a third of JOB_LEASE_S, so a lease survives two missed renewals.
    job_heartbeat_s: float | None = Field(default=None, gt=0)
    # How long a delivery of a job that another worker runs waits for it before it is
    # acknowledged anyway (the sweeper, not the queue, recovers a job whose worker dies).
    duplicate_wait_s: float = Field(default=0.0, ge=0)
    # A queued job handed to the queue this long ago and never claimed lost its message: the
    # sweeper hands it over again (four times at this spacing, then each time waiting twice as
    # long, at most 10 minutes)...
    requeue_after_s: float = Field(default=30.0, ge=1)
    # ...at most this many times (about 2 h 20 min with the defaults), then fails it
    # not_started.
    max_handovers: int = Field(default=20, ge=1, le=100)
    # Threads that take jobs off the inline queue: twice MAX_BATCH_SIZE lets one batch fill
    # while the previous one runs.
    inline_workers: int = Field(default=16, ge=1, le=64)
    # The fair dispatcher (dal.dispatcher) hands jobs to the queue while fewer than this many
    # are handed over and not ended, and keeps the rest in line in fair order.
    dispatch_capacity: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Jobs handed to the GPUs at once; the rest wait in fair order. Set it to the "
            "fleet's worker max instances x (per-instance concurrency + MAX_BATCH_SIZE), as "
            "the Terraform does. Default: 2 x MAX_BATCH_SIZE (one worker: a batch running, the "
            "next one forming), at most INLINE_WORKERS with the inline queue. 0: no limit, "
            "every job is handed over at once, first come first served."
        ),
    )
    progress_write_interval_s: float = Field(default=0.5, ge=0)
    cancel_check_interval_s: float = Field(default=0.25, ge=0)
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _apply_profile_and_check(self) -> Self:
        profile = PROFILES[self.app_env]
        for name in (*_ADAPTER_FIELDS, "push_auth"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, profile[name])
        if self.webhook_targets is None:
            targets = "public" if self.app_env in PUBLIC_WEBHOOK_ENVS else "any"
            object.__setattr__(self, "webhook_targets", targets)
        if self.webhook_backoff_max_s < self.webhook_backoff_base_s:
            raise ValueError("WEBHOOK_BACKOFF_MAX_S must be at least WEBHOOK_BACKOFF_BASE_S")
        try:
            # Parsed here too so that a typo stops the process at start, not a delivery.
            parse_networks(self.webhook_allowed_networks)
        except ValueError as exc:
            raise ValueError(f"WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
        if self.app_env in PRODUCTION_ENVS:
            self._refuse_unsafe_production_settings()
        parse_failpoints(self.failpoints)
        if self.outbox_give_up_s <= self.outbox_grace_s:
            raise ValueError("OUTBOX_GIVE_UP_S must be greater than OUTBOX_GRACE_S")
        if 2 * self.resolved_job_heartbeat_s > self.job_lease_s:
            # One late or failed renewal must not lose the job to the sweeper.
            raise ValueError("JOB_HEARTBEAT_S must be at most half of JOB_LEASE_S")
        if (
            self.app_env == "emulator"
            and self.blob_store == "gcs"
            and self.gcs_signing_key_file is None
        ):
            raise ValueError(
                "GCS_SIGNING_KEY_FILE must be set with APP_ENV=emulator: the emulator has no "
                "IAM to sign URLs (`make dev` generates one)"
            )
        return self

    def _refuse_unsafe_production_settings(self) -> None:
        problems: list[str] = []
        fakes = {
            "job_store": "memory",
            "blob_store": "memory",
            "job_queue": "memory",
            "rate_limiter": "memory",
            "job_events": "memory",
        }
        for name, fake in fakes.items():
            if getattr(self, name) == fake:
                problems.append(
                    f"{name.upper()}={fake} is an in-process fake, not allowed with "
                    f"APP_ENV={self.app_env}"
                )
        if self.job_queue == "inline":
            problems.append(
                f"JOB_QUEUE=inline runs jobs inside the API process, not allowed with "
                f"APP_ENV={self.app_env}"
            )
        if self.push_auth == "none":
            problems.append(
                f"PUSH_AUTH=none turns off push-request authentication, not allowed with "
                f"APP_ENV={self.app_env}"
            )
        elif not (self.push_audience and self.push_service_account):
            problems.append("PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT must be set for PUSH_AUTH=oidc")
        if self.job_store == "sql" and (self.database_url or "").startswith("sqlite"):
            problems.append(f"DATABASE_URL=sqlite is not allowed with APP_ENV={self.app_env}")
        # Which account signs image URLs is configuration, not a guess from the runtime's
        # credentials: that account must hold iam.serviceAccounts.signBlob on itself, and the
        # deployment grants it to the account it names here.
        if self.blob_store == "gcs" and not (
            self.gcs_signing_service_account or self.gcs_signing_key_file
        ):
            problems.append(
                "BLOB_STORE=gcs needs GCS_SIGNING_SERVICE_ACCOUNT (or GCS_SIGNING_KEY_FILE) "
                f"with APP_ENV={self.app_env}: the account that signs image URLs"
            )
        for name in ("api_key_pepper", "url_signing_secret", "webhook_signing_secret"):
            secret = getattr(self, name)
            if secret is None:  # webhook_signing_secret: derived from url_signing_secret
                continue
            value = secret.get_secret_value()
            if PLACEHOLDER_MARKER in value or len(value) < 32:
                problems.append(
                    f"{name.upper()} is a placeholder or shorter than 32 characters; "
                    "set a random secret (e.g. from Secret Manager)"
                )
        if self.webhook_targets == "any":
            problems.append(
                "WEBHOOK_TARGETS=any lets webhooks reach private and loopback addresses, "
                f"not allowed with APP_ENV={self.app_env}"
            )
        if self.failpoints:
            problems.append(f"FAILPOINTS injects faults, not allowed with APP_ENV={self.app_env}")
        if self.bootstrap_api_key is not None:
            key = self.bootstrap_api_key.get_secret_value()
            if len(key) < 24:
                problems.append("BOOTSTRAP_API_KEY is shorter than 24 characters")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))

    # Resolved values -----------------------------------------------------------------------

    @property
    def resolved_job_heartbeat_s(self) -> float:
        return self.job_heartbeat_s or self.job_lease_s / 3

    @property
    def job_store_in_process(self) -> bool:
        """Whether the job store is this process's memory or a local SQLite file."""
        return self.job_store == "memory" or (
            self.job_store == "sql" and self.resolved_database_url.startswith("sqlite")
        )

    @property
    def blob_urls_signed_in_process(self) -> bool:
        """Whether this process signs its image URLs itself (HMAC, no I/O) and serves the
        blobs they name: filesystem or memory blobs, as opposed to object storage."""
        return self.blob_store in ("filesystem", "memory")

    @property
    def submits_stay_in_process(self) -> bool:
        """Whether a submit touches nothing but this process and a local file: a SQLite or
        in-memory job store, an in-process queue and request cache (the embedded profile).
        Its work is then CPU alone, behind one writer (api/call_lane.py)."""
        return (
            self.job_store_in_process
            and self.job_queue in ("inline", "memory")
            and self.request_cache == "memory"
        )

    @property
    def job_reads_stay_in_process(self) -> bool:
        """Whether reading one job and rendering it touches nothing but this process and a
        local file: a SQLite or in-memory job store, image URLs this process signs (filesystem
        or memory blobs) and a line held in memory for a queued job's place
        (api/call_lane.py)."""
        return (
            self.job_store_in_process
            and self.blob_urls_signed_in_process
            and self.request_cache == "memory"
        )

    @property
    def resolved_dispatch_capacity(self) -> int:
        if self.dispatch_capacity is not None:
            return self.dispatch_capacity
        # One worker: a batch running and the next one forming (more only queues up in the
        # broker, or in the inline queue, first come first served).
        capacity = 2 * self.max_batch_size
        if self.job_queue == "inline":
            # Jobs handed over beyond the threads that run them would wait first come first
            # served in the in-process queue.
            return min(capacity, self.inline_workers)
        return capacity

    @property
    def is_production(self) -> bool:
        return self.app_env in PRODUCTION_ENVS

    @property
    def resolved_log_format(self) -> Literal["json", "text"]:
        if self.log_format is not None:
            return self.log_format
        return "text" if self.app_env in ("local", "test") else "json"

    @property
    def webhook_allowed_network_list(
        self,
    ) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return parse_networks(self.webhook_allowed_networks)

    @property
    def resolved_webhook_signing_secret(self) -> str:
        """WEBHOOK_SIGNING_SECRET, or a key derived from URL_SIGNING_SECRET for this one use
        (so production needs no extra secret, and neither key reveals the other)."""
        if self.webhook_signing_secret is not None:
            return self.webhook_signing_secret.get_secret_value()
        base = self.url_signing_secret.get_secret_value().encode()
        return hmac.new(base, b"txt2img webhook signing", hashlib.sha256).hexdigest()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'txt2img.sqlite3').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @property
    def resolved_model_path(self) -> Path:
        """MODEL_PATH, or the tiny development model's folder (built on first use)."""
        if self.model_path is not None:
            return self.model_path
        return self.data_dir / "models" / "tiny-sd"
