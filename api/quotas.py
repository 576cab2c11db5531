"""Per-owner quotas besides the rate limit: jobs in flight, and images per UTC day.

Usage is counted over all of an owner's jobs (JobStore.count_in_flight, count_images_since);
the limits come from the key that submits (its overrides) or the service's defaults. A limit
of 0 means unlimited, and an unlimited quota costs no store read. The job store admits a job
and counts in one atomic step per owner (JobStore.create_within), so a limit holds exactly
across API processes; the rules and the refusals are dal.quota_rules'.

What counts: in flight are jobs `queued` or `running`. The day's images are the num_images of
every job accepted since 00:00 UTC, whatever became of it (canceled and failed jobs count:
they were accepted and may have used a GPU), except jobs failed `enqueue_failed`, which never
reached a worker. Idempotent replays and deduplicated requests create no job, so they are not
checked or charged again.
"""

from __future__ import annotations

from dataclasses import dataclass


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
