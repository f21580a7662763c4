"""Many processes on one database: the worker registry, the scheduler lease and
the limits every sending process shares.

There is no broker: PostgreSQL (or, on one host, SQLite) is the coordination
engine, as the delivery rows already are the queue (``SKIP LOCKED`` claims).

Rules this module keeps:

- **registry**: every ``newsletter run`` (role ``run``: scheduler + delivery),
  ``newsletter worker`` (role ``worker``: delivery only) has a row in ``workers``
  with its host, pid, version and a heartbeat every ``lease_seconds / 3`` (at
  most every 5 s).  A row whose heartbeat is older than its ``lease_seconds`` is
  *lost*: its claims come back when their leases lapse, as for any crash.  A
  clean stop deletes the row; a lost one is shown by ``status`` for a day
  (FORGET_LOST_AFTER), then removed by the next process that starts.  This is
  the one registry of processes: ``status``, ``schedule list``/``run-now`` and
  ``edition send --detach`` all read it (:func:`list_workers`).
- **one scheduler at a time**: the scheduler role is the named lease
  ``scheduler`` (a row in ``leases``), taken only when free or lapsed and renewed
  by its holder, on the database's clock.  A process ticks the schedule only
  while it holds the lease; a standby tries to take it at every heartbeat, so it
  takes over at most ``lease_seconds`` + one heartbeat after the holder died (a
  clean stop releases it at once).  A leased row and not
  ``pg_advisory_lock``: it works the same on SQLite (several processes on one
  host), ``status`` can show who holds it and until when, it needs no dedicated
  session that a transaction-mode pooler (pgbouncer) would break, and it is the
  same lease model the delivery rows use.  The cost: a holder that dies is
  replaced after its lease, not the instant its connection drops.  A split brain
  is also fenced below: editions are unique per (publication, slot).
- **global limits**: ``rate`` and each ``domain_limits`` group are one token
  bucket row in ``shared_limits``; a process takes *grants* of a quarter
  second's worth of tokens (at least one), so the row is touched a few times a
  second whatever the number of workers.  Tokens a process was granted and did
  not use when it stops are lost: the total rate can only fall short, never
  exceed.  A provider-wide throttle (429, 421) is the row ``throttle`` with
  ``until``: every process holds its sending back until then.  ``hourly_quota``
  and ``daily_quota`` are counted from the delivery log, which is already shared,
  plus every live claim of every process, and claimed under the lock of the
  ``quota`` row (delivery.py ``_quota_room``): what one process has in flight is
  used budget for all the others.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from . import __version__
from .config import Rate
from .store import workers as store
from .store.tables import utcnow

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"
THROTTLE = "throttle"
GRANT_SECONDS = 0.25  # a grant is this many seconds' worth of tokens
MAX_HEARTBEAT = 5.0
FORGET_LOST_AFTER = timedelta(days=1)


def heartbeat_every(lease_seconds: float) -> float:
    return min(lease_seconds / 3, MAX_HEARTBEAT)


class Registry:
    """This process's row in ``workers``."""

    def __init__(self, engine: Engine, role: str, lease_seconds: float, *, started_at: datetime | None = None):
        self.engine = engine
        self.role = role
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = started_at or utcnow()
        self.id = f"{self.host}:{self.pid}:{int(self.started_at.timestamp())}"
        self.state = "running"

    def beat(self) -> None:
        with self.engine.begin() as conn:
            store.heartbeat(conn, {"id": self.id, "role": self.role, "host": self.host, "pid": self.pid,
                                   "version": __version__, "state": self.state,
                                   "lease_seconds": self.lease_seconds, "started_at": self.started_at})

    def forget(self) -> None:
        with self.engine.begin() as conn:
            store.forget(conn, self.id)


class SchedulerLease:
    """The scheduler role: :meth:`hold` takes or renews it; ``held`` says whether
    this process had it at its last try (and its lease has not run out since)."""

    def __init__(self, engine: Engine, holder: str, lease_seconds: float,
                 monotonic: Callable[[], float] | None = None):
        import time

        self.engine = engine
        self.holder = holder
        self.lease_seconds = lease_seconds
        self.monotonic = monotonic or time.monotonic
        self._valid_until = float("-inf")  # monotonic: our own view of when our lease ends

    @property
    def held(self) -> bool:
        return self.monotonic() < self._valid_until

    def hold(self) -> bool:
        """Take or renew the lease; True when this process holds it now."""
        start = self.monotonic()
        with self.engine.begin() as conn:
            mine = store.acquire(conn, SCHEDULER, self.holder, self.lease_seconds)
        # Counted from before the statement: we never believe in a lease longer than the database does.
        self._valid_until = start + self.lease_seconds if mine else float("-inf")
        return mine

    def release(self) -> None:
        self._valid_until = float("-inf")
        with self.engine.begin() as conn:
            store.release(conn, SCHEDULER, self.holder)


class SharedBucket:
    """A token bucket kept in the database, with :class:`delivery.TokenBucket`'s
    interface (``available``/``take``/``wait`` on the caller's monotonic clock).

    Tokens are fetched in grants of GRANT_SECONDS' worth; while the shared bucket
    is empty it is asked again only when it said a token would be there."""

    def __init__(self, engine: Engine, key: str, rate: Rate, now: float):
        self.engine = engine
        self.key = key
        self.per_second = rate.per_second
        self.capacity = max(1.0, self.per_second)
        self.grant = max(1, math.floor(self.per_second * GRANT_SECONDS))
        self.tokens = 0.0
        self.retry_at = float("-inf")
        self.asked = 0  # round trips to the bucket row (for the benchmark)

    def available(self, now: float) -> int:
        if self.tokens < 1 and now >= self.retry_at:
            with self.engine.begin() as conn:
                got, wait = store.take_tokens(conn, self.key, self.per_second, self.capacity, self.grant)
            self.asked += 1
            self.tokens += got
            self.retry_at = now + wait if not got else float("-inf")
        return int(self.tokens + 1e-9)

    def take(self, n: int, now: float) -> None:
        self.tokens -= n

    def wait(self, now: float) -> float:
        if self.tokens + 1e-9 >= 1:
            return 0.0
        return max(self.retry_at - now, 0.001)


def domain_key(domains: tuple[str, ...]) -> str:
    return "domain:" + ",".join(sorted(domains))


def pause_everyone(engine: Engine, seconds: float, reason: str) -> None:
    """A provider-wide throttle: every sending process holds back for ``seconds``."""
    with engine.begin() as conn:
        store.pause(conn, THROTTLE, seconds, reason)


def pause_left(engine: Engine) -> tuple[float, str | None]:
    with engine.connect() as conn:
        return store.paused_for(conn, THROTTLE)


@dataclass(frozen=True)
class WorkerView:
    id: str
    role: str
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    seen_at: datetime
    lost: bool
    scheduler: bool


def forget_lost(engine: Engine, before: datetime) -> None:
    """Remove the rows of processes last seen before ``before`` (killed without a goodbye)."""
    with engine.begin() as conn:
        store.prune(conn, before)


def list_workers(engine: Engine, now: datetime | None = None) -> list[WorkerView]:
    """Every registered process; ``lost`` when its heartbeat is older than its lease."""
    now = now or utcnow()
    with engine.connect() as conn:
        rows = store.all_workers(conn)
        lease = store.lease_holder(conn, SCHEDULER)
    return [WorkerView(r.id, r.role, r.host, r.pid, r.version, r.state, r.started_at, r.seen_at,
                       lost=now - r.seen_at > timedelta(seconds=r.lease_seconds),
                       scheduler=lease is not None and lease.holder == r.id)
            for r in rows]
