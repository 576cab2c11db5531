"""The line for the GPUs in Redis, shared by every API instance and worker of a deployment.

Each operation is one Lua script, so admitting, taking and releasing are atomic however many
processes call them: a job is handed over once, and the count of handed-over jobs never passes
the capacity. The fair-share arithmetic is dal.fair_share's, written again in Lua (the FairLine
contract tests hold both lines to the same order). Keys share one hash tag, so the scripts also
run on a Redis Cluster:

* `waiting`  sorted set, score the start tag, member `<arrival seq, 12 digits>:<job id>` (ties
  go to the earlier arrival);
* `tickets`  hash, job id -> `member <TAB> start <TAB> finish <TAB> joined_at <TAB> owner`;
* `finish`   hash, owner -> latest finish tag; `vt` the virtual time; `seq` the arrival count;
* `handed`   sorted set, job id -> handed-over time; `ends` the latest end times;
* `restored` set by `restore`: an empty Redis (restarted without its data) lacks it.

Tags are written with 17 significant digits, so they survive the round trip through strings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from dal.fair_share import RECENT_ENDS, check_share, ends_per_second
from dal.ports import HandedOver, LineDepth, LinePlace, Ticket
from dal.redis.client import unavailable_on_outage

_KEYS = ("waiting", "tickets", "finish", "vt", "seq", "handed", "ends", "restored")

_COMMON = """
local K_WAITING, K_TICKETS, K_FINISH, K_VT, K_SEQ, K_HANDED, K_ENDS, K_RESTORED =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local function num(x) return string.format('%.17g', x) end

local function parse(ticket)
  return string.match(ticket, '^([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t(.*)$')
end

local function join(id, owner, cost, weight, now)
  if redis.call('HEXISTS', K_TICKETS, id) == 1 or redis.call('ZSCORE', K_HANDED, id) then
    return
  end
  local vt = tonumber(redis.call('GET', K_VT) or '0')
  local start = math.max(tonumber(redis.call('HGET', K_FINISH, owner) or '0'), vt)
  local finish = start + cost / weight
  redis.call('HSET', K_FINISH, owner, num(finish))
  local member = string.format('%012d', redis.call('INCR', K_SEQ)) .. ':' .. id
  redis.call('ZADD', K_WAITING, num(start), member)
  redis.call('HSET', K_TICKETS, id,
    member .. '\\t' .. num(start) .. '\\t' .. num(finish) .. '\\t' .. now .. '\\t' .. owner)
end

local function take(capacity, now)
  local out = {}
  while redis.call('ZCARD', K_HANDED) < capacity do
    local head = redis.call('ZRANGE', K_WAITING, 0, 0, 'WITHSCORES')
    if #head == 0 then break end
    local member, start = head[1], tonumber(head[2])
    local id = string.sub(member, 14)
    local _, _, _, joined, owner = parse(redis.call('HGET', K_TICKETS, id))
    redis.call('ZREM', K_WAITING, member)
    redis.call('HDEL', K_TICKETS, id)
    if start > tonumber(redis.call('GET', K_VT) or '0') then
      redis.call('SET', K_VT, num(start))
    end
    redis.call('ZADD', K_HANDED, now, id)
    out[#out + 1] = id
    out[#out + 1] = owner
    out[#out + 1] = num(tonumber(now) - tonumber(joined))
  end
  return out
end
"""

_ADMIT = (
    _COMMON
    + """
join(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
return take(tonumber(ARGV[6]), ARGV[5])
"""
)

_TAKE = _COMMON + "return take(tonumber(ARGV[1]), ARGV[2])"

_HAND_OVER_NOW = (
    _COMMON
    + """
local id, now = ARGV[1], ARGV[2]
local ticket = redis.call('HGET', K_TICKETS, id)
if ticket then
  local member, start = parse(ticket)
  redis.call('ZREM', K_WAITING, member)
  redis.call('HDEL', K_TICKETS, id)
  if tonumber(start) > tonumber(redis.call('GET', K_VT) or '0') then
    redis.call('SET', K_VT, start)
  end
end
redis.call('ZADD', K_HANDED, 'NX', now, id)
"""
)

_RELEASE = (
    _COMMON
    + """
local id, now, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZREM', K_HANDED, id) == 1 then
  redis.call('LPUSH', K_ENDS, now)
  redis.call('LTRIM', K_ENDS, 0, keep - 1)
  return 1
end
local ticket = redis.call('HGET', K_TICKETS, id)
if ticket then
  local member, start, finish, _, owner = parse(ticket)
  redis.call('ZREM', K_WAITING, member)
  redis.call('HDEL', K_TICKETS, id)
  if redis.call('HGET', K_FINISH, owner) == finish then
    redis.call('HSET', K_FINISH, owner, start)
  end
end
return 0
"""
)

_PLACE = (
    _COMMON
    + """
local ticket = redis.call('HGET', K_TICKETS, ARGV[1])
if not ticket then return false end
local member = parse(ticket)
return {redis.call('ZRANK', K_WAITING, member), redis.call('LRANGE', K_ENDS, 0, -1)}
"""
)

_PLACES = (
    _COMMON
    + """
local found = {}
for _, id in ipairs(ARGV) do
  local ticket = redis.call('HGET', K_TICKETS, id)
  if ticket then
    local member = parse(ticket)
    found[#found + 1] = id
    found[#found + 1] = redis.call('ZRANK', K_WAITING, member)
  end
end
return {found, redis.call('LRANGE', K_ENDS, 0, -1)}
"""
)

_RESTORE = (
    _COMMON
    + """
local now, handed_count = ARGV[1], tonumber(ARGV[2])
for i = 3, 2 + handed_count do
  local id = ARGV[i]
  if redis.call('HEXISTS', K_TICKETS, id) == 0 then
    redis.call('ZADD', K_HANDED, 'NX', now, id)
  end
end
local i = 3 + handed_count
while i <= #ARGV do
  join(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), now)
  i = i + 4
end
redis.call('SET', K_RESTORED, now)
"""
)


class RedisFairLine:
    """Raises StoreUnavailable when Redis is down."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "txt2img:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._clock = clock
        self._keys = [f"{prefix}{{line}}:{name}" for name in _KEYS]
        self._admit = client.register_script(_ADMIT)
        self._take = client.register_script(_TAKE)
        self._hand_over_now = client.register_script(_HAND_OVER_NOW)
        self._release = client.register_script(_RELEASE)
        self._place = client.register_script(_PLACE)
        self._places = client.register_script(_PLACES)
        self._restore = client.register_script(_RESTORE)

    def _key(self, name: str) -> str:
        return self._keys[_KEYS.index(name)]

    def admit(self, ticket: Ticket, *, capacity: int) -> list[HandedOver]:
        check_share(ticket.cost, ticket.weight)
        args = [ticket.job_id, ticket.owner, _num(ticket.cost), _num(ticket.weight)]
        with unavailable_on_outage("fair line (Redis)"):
            out = self._admit(keys=self._keys, args=[*args, self._now(), capacity])
        return _handed(out)

    def take(self, *, capacity: int) -> list[HandedOver]:
        with unavailable_on_outage("fair line (Redis)"):
            return _handed(self._take(keys=self._keys, args=[capacity, self._now()]))

    def hand_over_now(self, job_id: str) -> None:
        with unavailable_on_outage("fair line (Redis)"):
            self._hand_over_now(keys=self._keys, args=[job_id, self._now()])

    def release(self, job_id: str) -> bool:
        with unavailable_on_outage("fair line (Redis)"):
            freed = self._release(keys=self._keys, args=[job_id, self._now(), RECENT_ENDS])
        return bool(freed)

    def place(self, job_id: str) -> LinePlace | None:
        with unavailable_on_outage("fair line (Redis)"):
            found = self._place(keys=self._keys, args=[job_id])
        if not found:
            return None
        rank, ends = found
        return LinePlace(int(rank), ends_per_second(_floats(ends), self._clock()))

    def places(self, job_ids: Sequence[str]) -> dict[str, LinePlace]:
        if not job_ids:
            return {}
        # One script, not a pipeline of `place`s: each rank needs its ticket read first.
        with unavailable_on_outage("fair line (Redis)"):
            found, ends = self._places(keys=self._keys, args=list(dict.fromkeys(job_ids)))
        rate = ends_per_second(_floats(ends), self._clock())
        return {str(found[i]): LinePlace(int(found[i + 1]), rate) for i in range(0, len(found), 2)}

    def handed_over_at(self, job_id: str) -> float | None:
        with unavailable_on_outage("fair line (Redis)"):
            at = self._client.zscore(self._key("handed"), job_id)
        return None if at is None else float(at)

    def depth(self) -> LineDepth:
        with unavailable_on_outage("fair line (Redis)"):
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(self._key("waiting"))
            pipe.zcard(self._key("handed"))
            pipe.lrange(self._key("ends"), 0, -1)
            waiting, handed, ends = pipe.execute()
        return LineDepth(int(waiting), int(handed), ends_per_second(_floats(ends), self._clock()))

    def waiting_since(self) -> dict[str, float]:
        with unavailable_on_outage("fair line (Redis)"):
            tickets: dict[str, str] = self._client.hgetall(self._key("tickets"))  # type: ignore[assignment]
        oldest: dict[str, float] = {}
        for ticket in tickets.values():
            _, _, _, joined, owner = ticket.split("\t", 4)
            oldest[owner] = min(oldest.get(owner, float(joined)), float(joined))
        return oldest

    def handed_over_before(self, at: float, *, limit: int) -> list[str]:
        with unavailable_on_outage("fair line (Redis)"):
            due = self._client.zrangebyscore(
                self._key("handed"), "-inf", _num(at), start=0, num=limit
            )
        return [str(job_id) for job_id in due]

    def needs_restore(self) -> bool:
        with unavailable_on_outage("fair line (Redis)"):
            return not self._client.exists(self._key("restored"))

    def restore(self, waiting: Sequence[Ticket], handed_over: Sequence[str]) -> None:
        args: list[Any] = [self._now(), len(handed_over), *handed_over]
        for ticket in waiting:
            check_share(ticket.cost, ticket.weight)
            args += [ticket.job_id, ticket.owner, _num(ticket.cost), _num(ticket.weight)]
        with unavailable_on_outage("fair line (Redis)"):
            self._restore(keys=self._keys, args=args)

    def ping(self) -> None:
        with unavailable_on_outage("fair line (Redis)"):
            self._client.ping()

    def _now(self) -> str:
        return _num(self._clock())


def _num(value: float) -> str:
    return f"{value:.17g}"


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _handed(out: Any) -> list[HandedOver]:
    items = list(out or [])
    return [
        HandedOver(str(items[i]), str(items[i + 1]), float(items[i + 2]))
        for i in range(0, len(items), 3)
    ]
