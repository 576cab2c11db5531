"""The web page at `/`: plain HTML, CSS and JavaScript from `api/web/`, no build step.

The page talks to the same public API as every other client, with the key the user types
(kept in the tab's sessionStorage). It is served with a strict Content-Security-Policy: no
inline script or style, no third-party origin except where the images live.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Header, Response

from api.deps import ServicesDep
from api.problems import ProblemError
from dal.settings import Settings

router = APIRouter(include_in_schema=False)

# The only files served, by name: no path from a request ever reaches the file system.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
GCS_ORIGIN = "https://storage.googleapis.com"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def load_asset(name: str) -> Asset:
    body = files("api").joinpath("web", name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body=body, media_type=ASSETS[name], etag=etag)


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def image_sources(settings: Settings) -> list[str]:
    """Where the page may load images from: this API, its public origin, and the object
    store when images are served from there (GCS, or its emulator)."""
    sources = ["'self'"]
    if settings.public_base_url and (origin := _origin(settings.public_base_url)):
        sources.append(origin)
    if settings.blob_store == "gcs":
        # Imported here: google-cloud-storage is only installed where GCS is used.
        from dal.gcs.client import emulator_endpoint

        endpoint = emulator_endpoint()
        sources.append((_origin(endpoint) if endpoint else None) or GCS_ORIGIN)
    return sources


def content_security_policy(settings: Settings) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {' '.join(image_sources(settings))}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _serve(name: str, if_none_match: str | None, headers: dict[str, str]) -> Response:
    asset = load_asset(name)
    # Revalidated on every load (the files change with each deploy) but cheap: a 304 when
    # the browser's copy is current.
    headers = {
        **headers,
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if if_none_match and asset.etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    return Response(content=asset.body, media_type=asset.media_type, headers=headers)


IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]


@router.get("/")
def index(services: ServicesDep, if_none_match: IfNoneMatch = None) -> Response:
    headers = {
        "Content-Security-Policy": content_security_policy(services.settings),
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    return _serve("index.html", if_none_match, headers)


@router.get("/web/{name}")
def asset(name: str, if_none_match: IfNoneMatch = None) -> Response:
    if name not in ASSETS or name == "index.html":
        raise ProblemError("not-found", f"No web asset {name!r}.")
    return _serve(name, if_none_match, {})
