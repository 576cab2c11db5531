"""The request cache in Redis: string values with a TTL, shared by every API instance."""

from __future__ import annotations

import redis

from dal.redis.client import unavailable_on_outage

# SET NX GET would do this in one command, but only from Redis 7.0; the script runs on any.
_PUT_IF_ABSENT = """
local existing = redis.call('GET', KEYS[1])
if existing then
  return existing
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class RedisRequestCache:
    """Keys are `prefix + key`; values are str (the client must decode responses, as
    `make_redis_client` does). Raises StoreUnavailable when Redis is down."""

    def __init__(self, client: redis.Redis, *, prefix: str = "txt2img:cache:") -> None:
        self._client = client
        self._prefix = prefix
        self._put_if_absent = client.register_script(_PUT_IF_ABSENT)

    def get(self, key: str) -> str | None:
        with unavailable_on_outage("request cache (Redis)"):
            value = self._client.get(self._prefix + key)
        return _text(value)

    def put_if_absent(self, key: str, value: str, *, ttl_s: int) -> str | None:
        _check_ttl(ttl_s)
        with unavailable_on_outage("request cache (Redis)"):
            existing = self._put_if_absent(keys=[self._prefix + key], args=[value, ttl_s])
        return _text(existing)

    def put(self, key: str, value: str, *, ttl_s: int) -> None:
        _check_ttl(ttl_s)
        with unavailable_on_outage("request cache (Redis)"):
            self._client.set(self._prefix + key, value, ex=ttl_s)

    def delete(self, key: str) -> None:
        with unavailable_on_outage("request cache (Redis)"):
            self._client.delete(self._prefix + key)

    def ping(self) -> None:
        with unavailable_on_outage("request cache (Redis)"):
            self._client.ping()


def _check_ttl(ttl_s: int) -> None:
    # Redis refuses EX 0; an entry that expires at once is a caller's mistake.
    if ttl_s < 1:
        raise ValueError("ttl_s must be at least 1 second")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"unexpected reply from Redis: {value!r}")
