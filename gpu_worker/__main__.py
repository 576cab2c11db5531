"""`python -m gpu_worker`: serve the push endpoint on WORKER_HOST:WORKER_PORT (Cloud Run: PORT).

`python -m gpu_worker --pull`: pull jobs from PUBSUB_JOBS_SUBSCRIPTION instead (GKE, VMs), with
/healthz and /readyz still served on the port for the orchestrator's probes.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from dal.settings import Settings
from dal.telemetry import configure_logging, configure_tracing, exporting_telemetry
from gpu_worker.app import create_worker_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gpu_worker", description=__doc__)
    parser.add_argument("--pull", action="store_true", help="pull from Pub/Sub instead of push")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = Settings()
    configure_logging(settings)
    configure_tracing(settings, service_name="txt2img-worker")
    # Cloud Run tells every container its port in PORT; locally the worker has its own.
    port = int(os.environ["PORT"]) if os.environ.get("K_SERVICE") else settings.worker_port
    app = create_worker_app(settings, pull=args.pull)
    config = uvicorn.Config(
        app,
        host=settings.worker_host,
        port=port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        # One generation at a time runs on the GPU; concurrent deliveries queue in threads.
        timeout_keep_alive=75,
        # Our handler (configure_logging) formats and redacts uvicorn's records too.
        log_config=None,
    )
    with exporting_telemetry(settings, settings.worker_host):
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
