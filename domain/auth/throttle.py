"""Login throttling: growing delays per account, a much higher bar per client IP, counted atomically.

Every attempt is reserved in Redis before the password is checked: one Lua
script refuses it while any of its subjects must still wait, else counts it as
a failure on each subject and, once a subject is past its free failures, sets
the moment before which that subject accepts no further attempt. So N parallel
wrong passwords cost at most the free failures in password checks, and the
wait is enforced by refusing (RATE_LIMITED with the seconds to wait), never by
sleeping. A success clears the account's count and hands the IP its attempt back.

A stranger can only slow an account down: a refused attempt counts nothing,
every wait ends (15 minutes at most), and an IP the account logged in from
successfully within 30 days (a known source) has a count of its own, so the
owner logging in from there is not held up by failures from elsewhere.

Waits are timed by the injected clock (passed to the script), not Redis's clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from domain.clock import Clock
from domain.errors import RateLimited
from domain.redis_store import RedisStore

_RESERVE = """
local now = tonumber(ARGV[1])
local wait = 0
for _, key in ipairs(KEYS) do
  local until_ms = tonumber(redis.call('HGET', key, 'until') or '0')
  if until_ms - now > wait then wait = until_ms - now end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  local at = 2 + (i - 1) * 4
  local free, base, cap, memory = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]),
    tonumber(ARGV[at + 3])
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  if failures >= free then
    redis.call('HSET', key, 'until', math.floor(now + math.min(base * 2 ^ (failures - free), cap)))
  end
  redis.call('PEXPIRE', key, memory)
end
return 0
"""

_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HINCRBY', KEYS[1], 'failures', -1) end
return 0
"""


@dataclass(frozen=True)
class Backoff:
    """`free` failures pass; after failure n >= free the next attempt waits min(base * 2^(n - free), cap).

    The count is forgotten `memory` after the subject's last counted attempt (a Redis key expiry).
    """

    free: int
    base: timedelta
    cap: timedelta
    memory: timedelta

    def args(self) -> list[int]:
        return [self.free, *(int(d.total_seconds() * 1000) for d in (self.base, self.cap, self.memory))]


#: Per account (e-mail), and per account and known source: 5 free, then 2 s, 4 s, 8 s, ... 15 min.
ACCOUNT = Backoff(5, timedelta(seconds=2), timedelta(minutes=15), timedelta(hours=24))
#: Per client IP, over all accounts: 100 free, then the same growing delays.
CLIENT_IP = Backoff(100, timedelta(seconds=2), timedelta(minutes=15), timedelta(hours=1))
#: How long an IP stays a known source of an account after a successful login from it.
KNOWN_SOURCE = timedelta(days=30)


class Throttle:
    """Reserve-before-check attempt counting on Redis, for the subjects of one kind of attempt."""

    def __init__(self, store: RedisStore, clock: Clock, name: str) -> None:
        self.store = store
        self.clock = clock
        self.name = name

    def key(self, subject: str) -> str:
        # one hash tag per throttle: a reservation's keys share a Redis Cluster slot
        return self.store.key("throttle", "{" + self.name + "}", subject)

    async def reserve(self, limits: list[tuple[str, Backoff]], what: str) -> None:
        """Count one attempt against every subject, or refuse it (counting nothing) while one must wait."""
        now_ms = int(self.clock.now().timestamp() * 1000)
        args = [now_ms, *(a for _, backoff in limits for a in backoff.args())]
        keys = [self.key(s) for s, _ in limits]
        wait_ms = int(await self.store.client.eval(_RESERVE, len(keys), *keys, *args))
        if wait_ms > 0:
            seconds = math.ceil(wait_ms / 1000)
            raise RateLimited(f"too many {what}: try again in {seconds} s", retryAfter=seconds)

    async def forget(self, subject: str) -> None:
        """The subject succeeded: its failures no longer count."""
        await self.store.client.delete(self.key(subject))

    async def refund(self, subject: str) -> None:
        """The reserved attempt was not a failure, but the subject's other failures still count."""
        await self.store.client.eval(_REFUND, 1, self.key(subject))

    async def mark(self, subject: str, ttl: timedelta) -> None:
        await self.store.client.set(self.key(subject), 1, ex=int(ttl.total_seconds()))

    async def marked(self, subject: str) -> bool:
        return bool(await self.store.client.exists(self.key(subject)))


@dataclass(frozen=True)
class LoginAttempt:
    account: str
    source: str


#: Longer e-mail addresses do not exist (RFC 5321); longer input is counted under its first 254 characters,
#: so that no caller can store large Redis keys.
MAX_EMAIL = 254


class LoginThrottle:
    """The login policy above, over one `Throttle`: reserve, then `succeeded` on a good login."""

    def __init__(self, store: RedisStore, clock: Clock) -> None:
        self.throttle = Throttle(store, clock, "login")

    async def reserve(self, email: str, client_ip: str) -> LoginAttempt:
        email = email[:MAX_EMAIL]
        known = await self.throttle.marked(f"known:{email}:{client_ip}")
        account = f"account:{email}:from:{client_ip}" if known else f"account:{email}"
        attempt = LoginAttempt(account, f"ip:{client_ip}")
        await self.throttle.reserve(
            [(attempt.account, ACCOUNT), (attempt.source, CLIENT_IP)], "failed logins"
        )
        return attempt

    async def succeeded(self, email: str, client_ip: str, attempt: LoginAttempt) -> None:
        """The account's failures (from anywhere) are cleared, and the IP becomes a known source."""
        email = email[:MAX_EMAIL]
        for account in {attempt.account, f"account:{email}"}:
            await self.throttle.forget(account)
        await self.throttle.refund(attempt.source)
        await self.throttle.mark(f"known:{email}:{client_ip}", KNOWN_SOURCE)
