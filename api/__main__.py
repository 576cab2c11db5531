"""`python -m api`: serve the API with uvicorn on HOST:PORT (default 127.0.0.1:8080)."""

from __future__ import annotations

import logging
import os

import uvicorn

from api.app import create_app
from dal.log_redaction import install_log_redaction
from dal.settings import Settings


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Cloud Run and local proxies set X-Forwarded-*; signed URLs must use the public origin.
        proxy_headers=True,
        forwarded_allow_ips="*" if settings.is_production else "127.0.0.1",
    )
    # uvicorn builds its log handlers in Config(); redact on them, not before.
    install_log_redaction()
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
