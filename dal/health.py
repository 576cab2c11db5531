"""Readiness checks as every process reports them on /readyz."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from dal.errors import GeneratorUnavailable


def run_checks(checks: Mapping[str, Callable[[], None]]) -> dict[str, str]:
    """Each check's result: "ok", or "failing: <exception type>" (never a vendor's message,
    which may name hosts or credentials; a GeneratorUnavailable's reason is our own words)."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except GeneratorUnavailable as exc:
            results[name] = f"failing: {type(exc).__name__}: {exc.reason}"
        except Exception as exc:
            results[name] = f"failing: {type(exc).__name__}"
    return results
