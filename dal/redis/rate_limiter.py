"""A token bucket per key in Redis, shared by every API instance.

The bucket is kept as GCRA state (Generic Cell Rate Algorithm): one number per key, the
"theoretical arrival time" (TAT) at which the bucket would be full again. A bucket with
capacity B refilled at one token per interval T holds B - (TAT - now) / T tokens, so this is
the same bucket as MemoryRateLimiter, stored in a single string. One Lua script reads the
server clock (TIME, so instances with skewed clocks agree), decides and writes, atomically.
The key expires when the bucket would be full again: an idle key costs nothing.
"""

from __future__ import annotations

import redis

from dal.ports import RateLimitDecision
from dal.redis.client import unavailable_on_outage

# Times are microseconds since the epoch; at ~1.8e15 a double still resolves 0.25 µs. The
# decision allows 1 µs of slack so float rounding never denies a hit that is exactly on time.
# Returns {allowed (0/1), remaining tokens, reset_after µs, retry_after µs}, all integers
# (Redis truncates Lua numbers to integers anyway).
_GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = math.max(tonumber(stored), now)
end
local window = capacity * interval
local new_tat = tat + cost * interval
local over = new_tat - now - window
if over <= 1 then
  local ttl_ms = math.ceil((new_tat - now) / 1000)
  if ttl_ms > 0 then
    redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
  else
    redis.call('DEL', KEYS[1])
  end
  local remaining = math.floor((window - (new_tat - now) + 1) / interval)
  return {1, math.max(0, remaining), math.ceil(new_tat - now), 0}
end
local remaining = math.floor((window - (tat - now) + 1) / interval)
return {0, math.max(0, remaining), math.ceil(tat - now), math.ceil(over)}
"""

_US = 1_000_000


class RedisRateLimiter:
    """A token bucket per key: `burst` requests at once (default `limit`), refilled at `limit`
    per `period_s`; the same decisions as MemoryRateLimiter, enforced across processes.

    Keys are `prefix + key`. Raises StoreUnavailable when Redis is down.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        limit: int,
        period_s: float,
        burst: int | None = None,
        prefix: str = "txt2img:rl:",
    ) -> None:
        if limit <= 0 or period_s <= 0:
            raise ValueError("limit and period must be positive")
        self._client = client
        self._capacity = burst if burst is not None else limit
        self._interval_us = period_s * _US / limit
        self._prefix = prefix
        self._script = client.register_script(_GCRA)

    def hit(self, key: str, *, cost: int = 1) -> RateLimitDecision:
        if cost < 0:
            raise ValueError("cost must not be negative")
        with unavailable_on_outage("rate limiter (Redis)"):
            reply = self._script(
                keys=[self._prefix + key],
                args=[repr(self._interval_us), self._capacity, cost],
            )
        allowed, remaining, reset_us, retry_us = (int(v) for v in reply)
        return RateLimitDecision(
            allowed=bool(allowed),
            limit=self._capacity,
            remaining=remaining,
            reset_after_s=max(0, reset_us) / _US,
            retry_after_s=max(0, retry_us) / _US,
        )
