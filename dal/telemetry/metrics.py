"""The service's Prometheus series, all prefixed `txt2img_`, in the process-wide registry.

One registry per process: in the embedded profile the API process also runs the inline worker,
and its /metrics shows both sets. Defining a series connects to nothing; values change only
where the code below is called from (routes, runner, batcher, engine wiring).
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

# Seconds, from a cached read to a minutes-long Prefer: wait or event stream.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# Seconds, from a tiny CPU model to SD-1.5 at 50 steps on a busy GPU.
_JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, 1800)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

HTTP_REQUEST_SECONDS = Histogram(
    "txt2img_http_request_duration_seconds",
    "HTTP request latency, by method, route template and status code.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
JOBS_SUBMITTED = Counter(
    "txt2img_jobs_submitted_total",
    "Job submissions answered by the API: created (a new job), replayed (same "
    "Idempotency-Key) or deduplicated (an identical seeded job had succeeded).",
    ["outcome"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "txt2img_jobs_finished_total",
    "Jobs that reached a final status (succeeded, failed, canceled), counted where the "
    "transition happened.",
    ["status"],
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "txt2img_job_runs_total",
    "Deliveries the job runner handled, by what it answered (succeeded, failed, canceled, "
    "duplicate, not_found, retry, in_progress).",
    ["outcome"],
    registry=REGISTRY,
)
JOBS_HANDED_OVER = Counter(
    "txt2img_jobs_handed_over_total",
    "Jobs the sweeper handed to the queue again, by why: lease_expired (its worker stopped "
    "renewing) or message_lost (queued, never claimed).",
    ["reason"],
    registry=REGISTRY,
)
DISPATCH_JOBS = Gauge(
    "txt2img_dispatch_jobs",
    "Jobs in line for the GPUs, by state: waiting (recorded, not yet handed to the queue) and "
    "handed_over (published, not yet ended; at most DISPATCH_CAPACITY). Sampled by each "
    "sweep pass.",
    ["state"],
    registry=REGISTRY,
)
DISPATCH_WAIT_SECONDS = Histogram(
    "txt2img_dispatch_wait_seconds",
    "From a job joining the line to its hand-over to the queue (0 while there is room).",
    buckets=(0.001, *_JOB_BUCKETS),
    registry=REGISTRY,
)
DISPATCHED = Counter(
    "txt2img_dispatched_total",
    "Jobs handed to the queue by the fair dispatcher, by owner.",
    ["owner"],
    registry=REGISTRY,
)
DISPATCH_OWNER_WAIT_SECONDS = Counter(
    "txt2img_dispatch_owner_wait_seconds_total",
    "Seconds the owner's jobs waited in line before their hand-over; divided by "
    "txt2img_dispatched_total, each owner's mean wait: fairness at work.",
    ["owner"],
    registry=REGISTRY,
)
DISPATCH_OLDEST_WAITING_SECONDS = Gauge(
    "txt2img_dispatch_oldest_waiting_seconds",
    "Age of each waiting owner's oldest job in line (owners with nothing waiting are absent). "
    "Sampled by each sweep pass.",
    ["owner"],
    registry=REGISTRY,
)
QUEUE_WAIT_SECONDS = Histogram(
    "txt2img_job_queue_wait_seconds",
    "From a job's creation to its first claim by a worker (started_at - created_at).",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
GENERATION_SECONDS = Histogram(
    "txt2img_generation_seconds",
    "One job's generation, as its runner waited for it (batch wait and pipeline included, "
    "storing the images not).",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
PIPELINE_SECONDS = Histogram(
    "txt2img_pipeline_seconds",
    "One pipeline call (one batch): denoising, decoding and PNG encoding.",
    buckets=_JOB_BUCKETS,
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "txt2img_batch_size_images",
    "Images per pipeline call.",
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
PIPELINE_RUNS = Counter(
    "txt2img_pipeline_runs_total",
    "Pipeline calls (one per batch), whether they produced images or failed.",
    registry=REGISTRY,
)
PIPELINE_FAILURES = Counter(
    "txt2img_pipeline_failures_total",
    "Pipeline calls that raised (their jobs are retried alone, failed or released).",
    registry=REGISTRY,
)
IMAGES_GENERATED = Counter(
    "txt2img_images_generated_total",
    "Images the pipeline produced, whatever happened to their jobs afterwards.",
    registry=REGISTRY,
)
IMAGES_PER_SECOND = Gauge(
    "txt2img_images_per_second",
    "Throughput of the last pipeline call: its images divided by its seconds "
    "(for an average over time use rate(txt2img_images_generated_total[5m])).",
    registry=REGISTRY,
)
MODEL_LOAD_SECONDS = Gauge(
    "txt2img_model_load_seconds",
    "How long loading the model onto its device took at this process's start.",
    registry=REGISTRY,
)
MODEL_WARM_UP_SECONDS = Gauge(
    "txt2img_model_warm_up_seconds",
    "How long the warm-up generation took at this process's start (0 when WARM_UP=false).",
    registry=REGISTRY,
)


def record_batch(*, images: int, seconds: float) -> None:
    """A pipeline call that produced `images` images in `seconds`."""
    PIPELINE_RUNS.inc()
    IMAGES_GENERATED.inc(images)
    BATCH_SIZE.observe(images)
    PIPELINE_SECONDS.observe(seconds)
    if seconds > 0:
        IMAGES_PER_SECOND.set(images / seconds)


def record_failed_batch(*, seconds: float) -> None:
    PIPELINE_RUNS.inc()
    PIPELINE_FAILURES.inc()
    PIPELINE_SECONDS.observe(seconds)


def record_stopped_batch(*, seconds: float) -> None:
    """A pipeline call stopped early because every job in it was canceled."""
    PIPELINE_RUNS.inc()
    PIPELINE_SECONDS.observe(seconds)
