"""`python -m api`: serve the API with uvicorn on HOST:PORT (default 127.0.0.1:8080)."""

from __future__ import annotations

import os

import uvicorn

from api.app import create_app
from dal.settings import Settings
from dal.telemetry import configure_logging, configure_tracing, exporting_telemetry


def main() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = Settings()
    configure_logging(settings)
    configure_tracing(settings, service_name="txt2img-api")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # Cloud Run and local proxies set X-Forwarded-*; signed URLs must use the public origin.
        proxy_headers=True,
        forwarded_allow_ips="*" if settings.is_production else "127.0.0.1",
        # Our handler (configure_logging) formats and redacts uvicorn's records too.
        log_config=None,
    )
    with exporting_telemetry(settings, settings.host):
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
