"""The lessor: the leader's clock for leases -- expiries, renewals, revokes and checkpoints.

etcd's lessor is split in two here. *Which* leases exist, their granted TTL,
their last checkpointed remaining TTL and their attached keys are replicated
state (``KVStore.leases``, changed only by applying LEASE_GRANT, LEASE_REVOKE
and LEASE_CHECKPOINT entries). *When* a lease runs out is decided by one
member only, the leader, with its own monotonic clock; that is this module.

* **Promote** (the member leads and has applied its term's first entry, so
  every entry of earlier terms): every lease runs ``extend`` (one election
  timeout) plus its remaining TTL from now -- the checkpointed remaining TTL
  when there is one, else the full TTL. A leader change therefore never
  expires a live lease. Leases piling up to expire in the same second are
  spread out, as etcd does.
* **Demote** (no longer leader, or stopping): forget every clock; nothing
  expires here until the next promotion.
* **Renew** (a keep-alive): the lease runs a full TTL from now. A lease that
  already ran out cannot be renewed: the renewal waits for its revoke and
  reports it not found.
* **Expiry**: every ``tick`` the leader collects up to ``revoke_rate * tick``
  expired leases, confirms it still leads (a ReadIndex round) and proposes a
  LEASE_REVOKE for each through Raft. A revoke is re-proposed only after
  ``expired_retry_interval`` if the lease is still there; revoking a lease
  twice is harmless (the second apply finds nothing and makes no revision).
* **Checkpoints**: a lease whose remaining TTL exceeds ``checkpoint_interval``
  is checkpointed every interval: the leader proposes LEASE_CHECKPOINT
  batches with the remaining TTLs, so a new leader (or a restarted cluster)
  resumes from them. A renewal clears a checkpoint (etcd proposes a
  remaining TTL of 0, meaning "the full TTL").

Invariants: clocks exist only while primary; ``_expiry`` holds exactly the
leases of the table this member has seen granted or promoted (a lease
missing from the table is dropped when met); nothing here changes replicated
state except by proposing through Raft.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import LeaseNotFoundError, MVCCError
from consensus.mvcc.lease import Lease, LeaseInfo
from consensus.server import errors
from consensus.server.config import DEFAULT_LEASE_CHECKPOINT_INTERVAL, MemberConfig
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.internal_request import InternalRequest, Op
from consensus.server.membership import MemberInfo

log = logging.getLogger(__name__)



class NotPrimaryError(Exception):
    """This member's lessor does not run the lease clocks now (it is not a promoted leader)."""


@dataclass(frozen=True, slots=True)
class LessorConfig:
    """How the lessor paces itself (etcd's values unless stated)."""

    extend: float = 1.0
    """Seconds added to every lease on promotion: the election timeout."""
    request_timeout: float = 7.0
    """How long a renewal may wait (for a revoke, a checkpoint, a promotion)."""
    checkpoint: bool = True
    """Whether remaining TTLs are checkpointed (etcd: --experimental-enable-lease-checkpoint)."""
    checkpoint_interval: float = DEFAULT_LEASE_CHECKPOINT_INTERVAL
    revoke_rate: int = 1000
    """Most expired leases revoked per second."""
    checkpoint_rate: int = 1000
    """Most checkpoint batches proposed per second."""
    checkpoint_batch: int = 1000
    """Most checkpoints in one LEASE_CHECKPOINT entry."""
    expired_retry_interval: float = 3.0
    """An expired lease still present this long after its revoke was proposed is proposed again."""
    tick: float = 0.5
    """Seconds between two rounds of expiry and checkpoint work."""

    @staticmethod
    def for_member(config: MemberConfig) -> LessorConfig:
        """The lessor settings of a member: election timeout, request timeout, checkpoint flags."""
        return LessorConfig(
            extend=config.election_timeout_ms / 1000,
            request_timeout=config.request_timeout,
            checkpoint=config.lease_checkpoint,
            checkpoint_interval=config.lease_checkpoint_interval,
        )


class LessorMember(Protocol):
    """What the lease subsystem needs of the Raft member (``consensus.server.member.Member``)."""

    @property
    def id(self) -> int: ...

    @property
    def leader(self) -> int: ...

    @property
    def is_leader(self) -> bool: ...

    async def propose(self, data: bytes, timeout: float | None = None) -> object: ...

    async def read_index(self, timeout: float | None = None) -> int: ...

    def on_leadership(self, listener: Callable[[bool], None]) -> Callable[[], None]: ...

    def members(self) -> list[MemberInfo]: ...


Clock = Callable[[], float]


class Lessor:
    """One member's lessor: the lease clocks while it leads, nothing while it follows."""

    def __init__(
        self,
        member: LessorMember,
        fsm: EtcdStateMachine,
        config: LessorConfig | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.member = member
        self.fsm = fsm
        self.config = config if config is not None else LessorConfig()
        self._clock = clock
        self._primary = False
        self._epoch = 0
        """Incremented on every promotion and demotion: work started in an old epoch is void."""
        self._expiry: dict[int, float] = {}
        """Lease id -> when it runs out (monotonic seconds); only while primary."""
        self._due: dict[int, float] = {}
        """Lease id -> when the expiry loop looks at it next (its expiry, or a revoke retry)."""
        self._due_heap: list[tuple[float, int]] = []
        """(due time, lease id); entries that disagree with ``_due`` are stale and skipped."""
        self._checkpoint_heap: list[tuple[float, int]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._stop_hooks: list[Callable[[], object]] = []
        self._started = False

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the member's leadership and the applied lease changes. Idempotent."""
        if self._started:
            return
        self._started = True
        self._unsubscribe.append(self.fsm.on_lease(self._on_lease_change))
        self.fsm.on_restore(self._on_restore)
        self._unsubscribe.append(self.member.on_leadership(self._on_leadership))

    def on_stop(self, hook: Callable[[], object]) -> None:
        """Run ``hook()`` (awaiting it if it returns an awaitable) when the lessor stops."""
        self._stop_hooks.append(hook)

    async def stop(self) -> None:
        """Stop following the member, demote, and wait for background work to end."""
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()
        self._started = False
        self.demote()
        pending = [t for t in self._background if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for hook in self._stop_hooks:
            result = hook()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result
        self._stop_hooks.clear()

    # -- primary or not ---------------------------------------------------------------------------
    @property
    def is_primary(self) -> bool:
        """Whether this member runs the lease clocks (it leads and has caught up)."""
        return self._primary

    def _on_leadership(self, leading: bool) -> None:
        if leading:
            self.promote()
        else:
            self.demote()

    def promote(self) -> None:
        """Start the clocks: each lease runs ``extend`` plus its remaining TTL from now (etcd)."""
        if self._primary:
            self.demote()
        self._primary = True
        self._epoch += 1
        now = self._clock()
        leases = self.fsm.kv.leases.leases()
        for lease in leases:
            self._set_expiry(lease.id, now + self.config.extend + lease.remaining())
            self._schedule_checkpoint(lease, now)
        self._spread_pile_up(leases, now)
        self._task = self._spawn(self._run(self._epoch))
        self._notify()
        log.info("lessor promoted: %d leases, each extended by %.1fs", len(leases), self.config.extend)

    def demote(self) -> None:
        """Stop the clocks: nothing expires here until the next promotion."""
        if not self._primary:
            return
        self._primary = False
        self._epoch += 1
        self._expiry.clear()
        self._due.clear()
        self._due_heap.clear()
        self._checkpoint_heap.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._notify()
        log.info("lessor demoted")

    async def wait_primary(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until this lessor is primary; whether it is."""
        return await self._wait_until(lambda: self._primary, timeout)

    def _spread_pile_up(self, leases: list[Lease], now: float) -> None:
        """etcd's fix for a revoke storm after a promotion: leases due in the same second
        beyond 3/4 of the revoke rate are pushed back, proportionally."""
        rate = self.config.revoke_rate
        if len(leases) < rate:
            return
        order = sorted(leases, key=lambda lease: (self._expiry[lease.id], lease.id))
        target = (3 * rate) // 4
        base = self._expiry[order[0].id] - now
        next_window = base + 1.0
        expires = 0
        for lease in order:
            remaining = self._expiry[lease.id] - now
            if remaining > next_window:
                base, next_window, expires = remaining, remaining + 1.0, 1
                continue
            expires += 1
            if expires <= target:
                continue
            delay = expires / target - (remaining - base)
            next_window = base + delay
            self._set_expiry(lease.id, self._expiry[lease.id] + max(0.0, delay))

    # -- the clocks ------------------------------------------------------------------------------
    def _set_expiry(self, lease_id: int, at: float) -> None:
        self._expiry[lease_id] = at
        self._set_due(lease_id, at)

    def _set_due(self, lease_id: int, at: float) -> None:
        self._due[lease_id] = at
        heapq.heappush(self._due_heap, (at, lease_id))

    def _forget(self, lease_id: int) -> None:
        self._expiry.pop(lease_id, None)
        self._due.pop(lease_id, None)

    def remaining(self, lease_id: int) -> float:
        """Seconds until the lease runs out (primary only; may be negative while its revoke is pending)."""
        if not self._primary:
            raise NotPrimaryError()
        lease = self.fsm.kv.leases.require(lease_id)
        at = self._expiry.get(lease_id)
        if at is None:  # granted before we noticed: it runs from now
            at = self._clock() + lease.remaining()
            self._set_expiry(lease_id, at)
        return at - self._clock()

    def time_to_live(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease as LeaseTimeToLive reports it on the leader: whole seconds left (truncated).

        Raises ``LeaseNotFoundError`` and ``NotPrimaryError``.
        """
        left = self.remaining(lease_id)
        info = self.fsm.kv.lease_time_to_live(lease_id, keys=keys)
        return LeaseInfo(info.id, max(0, int(left)), info.granted_ttl, info.keys)

    def leases_by_expiry(self) -> list[int]:
        """Every lease id, soonest expiry first while primary (as etcd lists them), else by id."""
        ids = self.fsm.kv.leases.ids()
        if not self._primary:
            return ids
        far = math.inf
        return sorted(ids, key=lambda i: (self._expiry.get(i, far), i))

    async def renew(self, lease_id: int) -> int:
        """A keep-alive: the lease runs a full TTL from now; returns that TTL.

        Raises ``NotPrimaryError`` (the caller forwards to the leader),
        ``LeaseNotFoundError``, and ``RequestTimeoutError`` when an expired
        lease's revoke does not land in time.
        """
        if not self._primary:
            raise NotPrimaryError()
        epoch = self._epoch
        lease = self.fsm.kv.leases.require(lease_id)
        if self.remaining(lease_id) <= 0:
            # Ran out: its revoke is pending or in flight. Being accurate means
            # waiting for it (etcd does the same) rather than reviving the lease.
            gone = await self._wait_until(
                lambda: lease_id not in self.fsm.kv.leases or self._epoch != epoch,
                self.config.request_timeout,
            )
            if lease_id not in self.fsm.kv.leases:
                raise LeaseNotFoundError()
            if self._epoch != epoch:
                raise NotPrimaryError()
            if not gone:
                raise errors.RequestTimeoutError()
        if self.config.checkpoint and lease.remaining_ttl > 0:
            # Clear the checkpoint first, so that a new leader grants the full TTL.
            with contextlib.suppress(errors.MemberError, MVCCError):
                await self._propose_checkpoints([(lease_id, 0)])
        if self._epoch != epoch:
            raise NotPrimaryError()
        lease = self.fsm.kv.leases.require(lease_id)
        self._set_expiry(lease_id, self._clock() + lease.ttl)
        return lease.ttl

    # -- applied lease changes --------------------------------------------------------------------------
    def _on_lease_change(self, op: Op, ids: tuple[int, ...]) -> None:
        if op == Op.LEASE_REVOKE:
            for lease_id in ids:
                self._forget(lease_id)
            self._notify()
            return
        if not self._primary:
            return
        now = self._clock()
        for lease_id in ids:
            lease = self.fsm.kv.leases.get(lease_id)
            if lease is None:
                continue
            if op == Op.LEASE_GRANT:
                self._set_expiry(lease_id, now + lease.ttl)
                self._schedule_checkpoint(lease, now)
            elif op == Op.LEASE_CHECKPOINT:
                self._schedule_checkpoint(lease, now)

    def _on_restore(self) -> None:
        """The whole table was replaced: keep the clocks of leases still there, start the new ones."""
        if not self._primary:
            return
        now = self._clock()
        table = self.fsm.kv.leases
        for lease_id in [i for i in self._expiry if i not in table]:
            self._forget(lease_id)
        for lease in table.leases():
            if lease.id not in self._expiry:
                self._set_expiry(lease.id, now + lease.remaining())
                self._schedule_checkpoint(lease, now)
        self._notify()

    # -- the expiry and checkpoint loop --------------------------------------------------------------------
    async def _run(self, epoch: int) -> None:
        tick = self.config.tick
        while self._epoch == epoch:
            try:
                expired = self._find_expired(max(1, int(self.config.revoke_rate * tick)))
                if expired:
                    self._spawn(self._revoke(expired, epoch))
                self._checkpoint_due(epoch)
            except Exception:  # a bug here must not stop every future expiry
                log.exception("lessor round failed")
            await asyncio.sleep(tick)

    def _find_expired(self, limit: int) -> list[int]:
        """Up to ``limit`` leases past their expiry, soonest first; each is looked at again
        only after ``expired_retry_interval`` (its revoke is in flight meanwhile)."""
        now = self._clock()
        found: list[int] = []
        table = self.fsm.kv.leases
        heap = self._due_heap
        while heap and len(found) < limit:
            at, lease_id = heap[0]
            if self._due.get(lease_id) != at:
                heapq.heappop(heap)  # stale: renewed, retried or forgotten since
                continue
            if lease_id not in table:
                heapq.heappop(heap)
                self._forget(lease_id)
                continue
            if at > now:
                break
            heapq.heappop(heap)
            if self._expiry[lease_id] <= now:
                found.append(lease_id)
                self._set_due(lease_id, now + self.config.expired_retry_interval)
            else:
                self._set_due(lease_id, self._expiry[lease_id])
        return found

    async def _revoke(self, lease_ids: list[int], epoch: int) -> None:
        """Revoke expired leases through Raft, once this member has confirmed it still leads."""
        try:
            await self.member.read_index(timeout=self.config.request_timeout)
        except errors.MemberError as exc:
            log.warning("not revoking %d expired leases: leadership unconfirmed (%s)", len(lease_ids), exc)
            return
        if self._epoch != epoch or not self.member.is_leader:
            return

        async def revoke(lease_id: int) -> None:
            body = pb.LeaseRevokeRequest(ID=lease_id).SerializeToString()
            try:
                # The audit trail records it as ``lease_expire`` (no principal, source "expiry").
                request = InternalRequest(
                    Op.LEASE_REVOKE, body, int(time.time() * 1000), source="expiry"
                )
                result = await self.member.propose(request.encode())
            except errors.MemberError as exc:
                log.warning("revoking expired lease %x failed: %s", lease_id, exc)
                return
            if isinstance(result, LeaseNotFoundError):
                return  # revoked meanwhile (by a client, or an earlier attempt)
            if isinstance(result, MVCCError):
                log.warning("revoking expired lease %x was refused: %s", lease_id, result)
            else:
                log.debug("revoked expired lease %x", lease_id)

        await asyncio.gather(*(revoke(i) for i in lease_ids))

    def _schedule_checkpoint(self, lease: Lease, now: float) -> None:
        if not self.config.checkpoint:
            return
        interval = self.config.checkpoint_interval
        if lease.remaining() > interval:
            heapq.heappush(self._checkpoint_heap, (now + interval, lease.id))

    def _checkpoint_due(self, epoch: int) -> None:
        """Propose the checkpoints that are due: up to ``checkpoint_rate * tick`` batches."""
        for _ in range(max(1, int(self.config.checkpoint_rate * self.config.tick))):
            batch = self._due_checkpoints(self.config.checkpoint_batch)
            if batch:
                self._spawn(self._checkpoint(batch, epoch))
            if len(batch) < self.config.checkpoint_batch:
                return

    def _due_checkpoints(self, limit: int) -> list[tuple[int, int]]:
        now = self._clock()
        batch: list[tuple[int, int]] = []
        heap = self._checkpoint_heap
        table = self.fsm.kv.leases
        while heap and len(batch) < limit:
            at, lease_id = heap[0]
            if at > now:
                break
            heapq.heappop(heap)
            lease = table.get(lease_id)
            expiry = self._expiry.get(lease_id)
            if lease is None or expiry is None or expiry <= now:
                continue
            remaining = math.ceil(expiry - now)
            if remaining >= lease.ttl:
                # Renewed moments ago: nothing to record yet; look again next interval.
                heapq.heappush(heap, (now + self.config.checkpoint_interval, lease_id))
                continue
            batch.append((lease_id, remaining))
        return batch

    async def _checkpoint(self, batch: list[tuple[int, int]], epoch: int) -> None:
        if self._epoch != epoch:
            return
        try:
            await self._propose_checkpoints(batch)
        except (errors.MemberError, MVCCError) as exc:
            log.warning("checkpointing %d leases failed: %s", len(batch), exc)

    async def _propose_checkpoints(self, batch: list[tuple[int, int]]) -> None:
        body = pb.LeaseCheckpointRequest(
            checkpoints=[pb.LeaseCheckpoint(ID=i, remaining_TTL=ttl) for i, ttl in batch]
        ).SerializeToString()
        result = await self.member.propose(
            InternalRequest(Op.LEASE_CHECKPOINT, body).encode(), timeout=self.config.request_timeout
        )
        if isinstance(result, MVCCError):
            raise result

    # -- helpers ------------------------------------------------------------------------------------------
    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return predicate()
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
