"""Per-owner quotas besides the rate limit: jobs in flight, and images per UTC day.

Usage is counted over all of an owner's jobs (JobStore.count_in_flight, count_images_since);
the limits come from the key that submits (its overrides) or the service's defaults. A limit
of 0 means unlimited, and an unlimited quota costs no store read.

What counts: in flight are jobs `queued` or `running`. The day's images are the num_images of
every job accepted since 00:00 UTC, whatever became of it (canceled and failed jobs count:
they were accepted and may have used a GPU), except jobs failed `enqueue_failed`, which never
reached a worker. Idempotent replays and deduplicated requests create no job, so they are not
checked or charged again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from dal.errors import QuotaExceeded
from dal.ports import JobStore

# A job in flight ends in seconds to minutes; there is no better moment to name.
IN_FLIGHT_RETRY_AFTER_S = 10


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    max_in_flight: int = 0  # 0: unlimited
    images_per_day: int = 0

    @classmethod
    def resolve(
        cls, defaults: QuotaLimits, *, max_in_flight: int | None, images_per_day: int | None
    ) -> QuotaLimits:
        """A key's overrides where it has them, the defaults elsewhere."""
        return cls(
            max_in_flight=defaults.max_in_flight if max_in_flight is None else max_in_flight,
            images_per_day=defaults.images_per_day if images_per_day is None else images_per_day,
        )

    @property
    def unlimited(self) -> bool:
        return self.max_in_flight == 0 and self.images_per_day == 0


class InFlightQuotaExceeded(QuotaExceeded):
    code = "quota-in-flight-exceeded"


class DailyImageQuotaExceeded(QuotaExceeded):
    code = "quota-images-per-day-exceeded"

    def __init__(
        self, message: str, *, limit: int, usage: int, requested: int, retry_after_s: int
    ) -> None:
        super().__init__(message, limit=limit, usage=usage, retry_after_s=retry_after_s)
        self.requested = requested


def start_of_utc_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_next_utc_day(now: datetime) -> int:
    tomorrow = start_of_utc_day(now) + timedelta(days=1)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


def check_quotas(
    jobs: JobStore, *, owner: str, limits: QuotaLimits, num_images: int, now: datetime
) -> None:
    """Raise QuotaExceeded if accepting a job of `num_images` would break a limit. The daily
    limit is checked first: when both are exceeded, its Retry-After is the one that matters."""
    if limits.images_per_day:
        used = jobs.count_images_since(owner, start_of_utc_day(now))
        if used + num_images > limits.images_per_day:
            raise DailyImageQuotaExceeded(
                f"This job asks for {num_images} image(s); {used} of the "
                f"{limits.images_per_day} images allowed per UTC day are used. The quota "
                "resets at 00:00 UTC.",
                limit=limits.images_per_day,
                usage=used,
                requested=num_images,
                retry_after_s=seconds_to_next_utc_day(now),
            )
    if limits.max_in_flight:
        in_flight = jobs.count_in_flight(owner)
        if in_flight >= limits.max_in_flight:
            raise InFlightQuotaExceeded(
                f"{in_flight} jobs are queued or running; at most {limits.max_in_flight} may "
                "be at once. Submit again when one has finished.",
                limit=limits.max_in_flight,
                usage=in_flight,
                retry_after_s=IN_FLIGHT_RETRY_AFTER_S,
            )
