"""What the images are made of, for the tests that prove an image's dependency set covers what
it runs: its Dockerfile's build check imports these modules (tests/unit/infra), and so does an
environment built from the image's lock alone (tests/integration/test_image_closure.py), with
the project's wheel built from the same sources as the Dockerfiles' wheel stage."""

from __future__ import annotations

ENTRY_POINT_MODULES: dict[str, tuple[str, ...]] = {
    # api/Dockerfile: CMD `python -m api`; `txt2img-admin` (keys, dead-letter replay, and the
    # outbox sweep Cloud Run job, `txt2img-admin outbox sweep`); the `txt2img` command line.
    "api": ("api.__main__", "api.app", "api.admin_cli", "api.cli", "api.outbox_sweeper"),
    # gpu_worker/Dockerfile: CMD `python -m gpu_worker` (push) and `--pull`; the Celery worker
    # (`celery -A gpu_worker.celery_worker:app worker`); the pipeline's child process, which
    # imports torch and diffusers; `txt2img-admin` and the tiny model's builder.
    "worker": (
        "gpu_worker.__main__",
        "gpu_worker.app",
        "gpu_worker.pull",
        "gpu_worker.celery_worker",
        "gpu_worker.engine_process",
        "gpu_worker.engine",
        "gpu_worker.tiny_model",
        "api.admin_cli",
    ),
}

# What the Dockerfiles' wheel stage copies into a fresh /src before building the wheel.
WHEEL_SOURCES: tuple[str, ...] = (
    "pyproject.toml",
    "README.md",
    "api",
    "dal",
    "gpu_worker",
    "emulators",
    "clients/python/txt2img_client",
)
