"""Build tooling that is not part of the service: the dependency locks (locks.py)."""
