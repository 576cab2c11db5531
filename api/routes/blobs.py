from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import ServicesDep
from api.problems import PROBLEM_MEDIA_TYPE, ProblemError
from api.schemas import Problem
from api.wiring import Services
from dal.errors import BlobUrlSignatureInvalid
from dal.url_signing import validate_blob_key

router = APIRouter(tags=["images"])


@router.get(
    "/v1/blobs/{key:path}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The image."},
        403: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}},
        404: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}},
    },
    summary="Download an image through a signed URL (no API key needed)",
)
async def get_blob(
    key: str,
    services: ServicesDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=64, max_length=64)],
) -> Response:
    # Async, and on the event loop: this route serves only blobs the API holds itself (a local
    # folder or memory, where `url_signer` is set), so the HMAC check and a read of a PNG from
    # disk cost less than the threadpool hop a sync route pays on every download (issue 19).
    return answer_blob(services, key, expires=expires, sig=sig)


def answer_blob(services: Services, key: str, *, expires: int, sig: str) -> Response:
    """`GET /v1/blobs/{key}` once its parameters are read: by this route, or by the hot route
    (api/hot_routes.py)."""
    signer = services.url_signer
    if signer is None:
        raise ProblemError("not-found", "Images are served from object storage, not this API.")
    try:
        validate_blob_key(key)
        signer.verify(key, expires=expires, sig=sig)
    except (ValueError, BlobUrlSignatureInvalid) as exc:
        raise ProblemError("forbidden", f"The signed URL is not valid: {exc}.") from None
    try:
        data = services.blobs.get(key)
    except ValueError:
        # A key that resolves outside the store (a symlink): as good as missing.
        raise ProblemError("not-found", "No such image.") from None
    remaining = max(0, math.floor(expires - time.time()))
    return Response(
        content=data,
        media_type="image/png",
        headers={
            "Cache-Control": f"private, max-age={remaining}, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )
