"""The public HTTP API (FastAPI). Never imports torch: jobs run in gpu_worker."""
