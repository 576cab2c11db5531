"""Start, wait for, seed and stop the local stand-ins for the cloud services.

Each module handles one service (`pubsub`, `firestore`, `gcs`, `redis`, `postgres`) with the
same shape: `start(...) -> Service` (idempotent: reuses one already listening), `stop(...)`.
Tests, `make dev` and `python -m emulators` all use these functions.
"""
