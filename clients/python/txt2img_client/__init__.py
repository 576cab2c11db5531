"""A Python client for the txt2img service's native job API (`/v1/jobs`): `Client` and
`AsyncClient` (asyncio) with the same methods, typed results, retries on 429 and 503, and
errors that carry the service's problem document. It depends on httpx alone.

    from txt2img_client import Client

    with Client("http://127.0.0.1:8080", "my-api-key") as client:
        job = client.wait(client.submit("a lighthouse at dawn", seed=7))
        client.download(job.images[0], "lighthouse.png")
"""

from ._async import AsyncClient
from ._errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    ServiceUnreachable,
    Txt2ImgError,
    Unauthenticated,
    UnexpectedResponse,
    WaitTimeout,
)
from ._models import (
    FieldError,
    Image,
    Job,
    JobError,
    JobEvent,
    JobPage,
    JobParams,
    JobStatus,
    Problem,
    ProgressEvent,
    QueueEvent,
    StatusEvent,
    Webhook,
    WebhookDelivery,
)
from ._retry import RetryPolicy
from ._sync import Client
from ._version import __version__

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "FieldError",
    "Forbidden",
    "Image",
    "InvalidRequest",
    "Job",
    "JobError",
    "JobEvent",
    "JobPage",
    "JobParams",
    "JobStatus",
    "NotFound",
    "Problem",
    "ProgressEvent",
    "QueueEvent",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "ServiceUnreachable",
    "StatusEvent",
    "Txt2ImgError",
    "Unauthenticated",
    "UnexpectedResponse",
    "WaitTimeout",
    "Webhook",
    "WebhookDelivery",
    "__version__",
]
