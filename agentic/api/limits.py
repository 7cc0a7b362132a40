"""Per-caller rate limit on session creation: token buckets per address and per proxy client."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from agentic.web.errors import ApiError

MAX_BUCKETS = 10_000
# One address may hold several callers (client proxies on one host share 127.0.0.1).
ADDRESS_FACTOR = 4


@dataclass
class Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """`per_minute` tokens a minute, up to `burst` saved; one bucket per key.

    Full buckets are dropped when there are too many, so memory stays bounded by the callers
    active in the last `burst / per_minute` minutes (a full bucket is the same as no bucket).
    """

    per_minute: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, key: str) -> float:
        """Take one token for `key`: 0 when granted, else the seconds until one is free."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                self._drop_full(now)
            bucket = self._buckets[key] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_minute / 60.0)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) * 60.0 / self.per_minute

    def give_back(self, key: str) -> None:
        """Return a token taken for a request another limit refused."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)

    def _drop_full(self, now: float) -> None:
        refill = self.per_minute / 60.0
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * refill >= self.burst]
        for key in full:
            del self._buckets[key]


@dataclass
class CreateLimits:
    """One bucket per caller (address plus the proxy's `x-client-id`) and a wider one per address,
    so a made-up client id per request gains a caller no more than the address's share."""

    per_caller: RateLimiter
    per_address: RateLimiter

    @classmethod
    def from_rate(cls, per_minute: float, burst: int) -> "CreateLimits":
        return cls(RateLimiter(per_minute, burst), RateLimiter(per_minute * ADDRESS_FACTOR, burst * ADDRESS_FACTOR))

    def check(self, request: web.Request, client_id: str | None) -> None:
        """429 `rate_limited` with Retry-After when this caller creates sessions too fast."""
        address = request.remote or "unknown"
        caller = f"{address} {client_id or ''}"
        wait = self.per_caller.take(caller)
        if wait == 0.0:
            wait = self.per_address.take(address)
            if wait > 0.0:
                self.per_caller.give_back(caller)
        if wait > 0.0:
            retry = max(1, math.ceil(wait))
            raise ApiError(429, "rate_limited", f"too many sessions created; retry in {retry} s", headers={"Retry-After": str(retry)})
