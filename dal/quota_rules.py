"""The admission rules of the per-owner quotas, as one pure function that every JobStore
adapter calls inside its atomic admission step (JobStore.create_within), so each raises the
same errors with the same messages and Retry-After whatever the store.

A limit of 0 means unlimited, and an unlimited quota costs no read: the counts are passed as
callables and called only for the limits that apply. The daily limit is checked first: when
both are exceeded, its Retry-After is the one that matters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from dal.errors import DailyImageQuotaExceeded, InFlightQuotaExceeded
from dal.records import Job

# A job in flight ends in seconds to minutes; there is no better moment to name.
IN_FLIGHT_RETRY_AFTER_S = 10


def start_of_utc_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_next_utc_day(now: datetime) -> int:
    return seconds_until(start_of_utc_day(now) + timedelta(days=1), now)


def seconds_until(moment: datetime, now: datetime) -> int:
    """Whole seconds from `now` to `moment`, at least 1 (a Retry-After of 0 invites a storm)."""
    return max(1, math.ceil((moment - now).total_seconds()))


def check_admission(
    job: Job,
    *,
    max_in_flight: int,
    images_per_day: int,
    day_start: datetime,
    count_in_flight: Callable[[], int],
    count_images_since: Callable[[datetime], int],
) -> None:
    """Raise DailyImageQuotaExceeded or InFlightQuotaExceeded if admitting `job` would break a
    limit, given the owner's usage as the counts report it. The day's window opens at
    `day_start` and closes a day later; `job.created_at` is the moment of the request."""
    requested = job.params.num_images
    if images_per_day:
        used = count_images_since(day_start)
        if used + requested > images_per_day:
            raise DailyImageQuotaExceeded(
                f"This job asks for {requested} image(s); {used} of the "
                f"{images_per_day} images allowed per UTC day are used. The quota "
                "resets at 00:00 UTC.",
                limit=images_per_day,
                usage=used,
                requested=requested,
                retry_after_s=seconds_until(day_start + timedelta(days=1), job.created_at),
            )
    if max_in_flight:
        in_flight = count_in_flight()
        if in_flight >= max_in_flight:
            raise InFlightQuotaExceeded(
                f"{in_flight} jobs are queued or running; at most {max_in_flight} may "
                "be at once. Submit again when one has finished.",
                limit=max_in_flight,
                usage=in_flight,
                retry_after_s=IN_FLIGHT_RETRY_AFTER_S,
            )
