"""Redis adapters: one rate limit and one request cache shared by every API instance, and
the job-events channel between workers and API processes.

Needs the `redis` package (the `cloud` extra). Build the client with
`dal.redis.client.make_redis_client`, which fails fast when Redis is down.
"""

from dal.redis.client import make_redis_client
from dal.redis.fair_line import RedisFairLine
from dal.redis.job_events import RedisJobEvents
from dal.redis.key_revocations import RedisKeyRevocations
from dal.redis.rate_limiter import RedisRateLimiter
from dal.redis.request_cache import RedisRequestCache

__all__ = [
    "RedisFairLine",
    "RedisJobEvents",
    "RedisKeyRevocations",
    "RedisRateLimiter",
    "RedisRequestCache",
    "make_redis_client",
]
