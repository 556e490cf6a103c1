"""The lessor on its own: a fake Raft member that applies proposals at once, and a fake clock.

These pin the leader-side rules the end-to-end tests cannot time precisely:
promotion extends every lease (from its checkpoint when it has one), expiry
proposes exactly one revoke, renewals of an expired lease wait for its
revoke, checkpoints carry ceil(remaining) and a renewal clears them, a
demoted lessor expires nothing, and a pile-up of expiries is spread out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import LeaseNotFoundError, PutRequest
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.internal_request import InternalRequest, Op
from consensus.server.lessor import Lessor, LessorConfig, NotPrimaryError
from consensus.server.membership import MemberInfo


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeMember:
    """Applies every proposal to the state machine immediately (a one-member cluster)."""

    def __init__(self, fsm: EtcdStateMachine) -> None:
        self.fsm = fsm
        self.proposed: list[InternalRequest] = []
        self._index = 0
        self._listeners: list[Callable[[bool], None]] = []
        self.leading = False
        self.revokes_open = asyncio.Event()
        """Cleared to hold LEASE_REVOKE proposals in flight (as a slow Raft round would)."""
        self.revokes_open.set()

    id = 1

    @property
    def leader(self) -> int:
        return 1 if self.leading else 0

    @property
    def is_leader(self) -> bool:
        return self.leading

    async def propose(self, data: bytes, timeout: float | None = None) -> object:
        self.proposed.append(InternalRequest.decode(data))
        if self.proposed[-1].op == Op.LEASE_REVOKE:
            await self.revokes_open.wait()
        self._index += 1
        return self.fsm.apply(self._index, 1, data)

    async def read_index(self, timeout: float | None = None) -> int:
        return self._index

    def on_leadership(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def members(self) -> list[MemberInfo]:
        return []

    def lead(self, leading: bool) -> None:
        self.leading = leading
        for listener in list(self._listeners):
            listener(leading)

    def ops(self, op: Op) -> list[InternalRequest]:
        return [r for r in self.proposed if r.op == op]


async def grant(member: FakeMember, lease_id: int, ttl: int) -> None:
    body = pb.LeaseGrantRequest(ID=lease_id, TTL=ttl).SerializeToString()
    await member.propose(InternalRequest(Op.LEASE_GRANT, body).encode())


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


Setup = tuple[FakeMember, EtcdStateMachine, Lessor, FakeClock]


@pytest.fixture
async def setup() -> Setup:
    fsm = EtcdStateMachine(min_lease_ttl=1)
    member = FakeMember(fsm)
    clock = FakeClock()
    config = LessorConfig(
        extend=1.0, request_timeout=2.0, checkpoint_interval=5.0, tick=0.005,
        expired_retry_interval=3.0, revoke_rate=1000,
    )
    lessor = Lessor(member, fsm, config, clock=clock)
    lessor.start()
    return member, fsm, lessor, clock


async def test_promotion_extends_leases_from_their_checkpoint(setup: Setup) -> None:
    member, fsm, lessor, clock = setup
    await grant(member, 1, 10)
    await grant(member, 2, 60)
    fsm.kv.lease_checkpoint(2, 20)  # as a LEASE_CHECKPOINT apply would
    with pytest.raises(NotPrimaryError):
        lessor.time_to_live(1)
    assert lessor.leases_by_expiry() == [1, 2]
    member.lead(True)
    assert lessor.is_primary
    assert lessor.remaining(1) == pytest.approx(11.0)  # full TTL + extend
    assert lessor.remaining(2) == pytest.approx(21.0)  # checkpoint + extend
    clock.now += 5.5
    assert lessor.time_to_live(1).ttl == 5 and lessor.time_to_live(2).granted_ttl == 60
    assert lessor.leases_by_expiry() == [1, 2]
    member.lead(False)
    assert not lessor.is_primary
    with pytest.raises(NotPrimaryError):
        await lessor.renew(1)
    await lessor.stop()


async def test_an_expired_lease_is_revoked_once_and_cannot_be_renewed(setup: Setup) -> None:
    member, fsm, lessor, clock = setup
    member.lead(True)
    await grant(member, 7, 2)
    fsm.kv.put(PutRequest(b"k", b"v", lease=7))
    rev = fsm.kv.revision
    clock.now += 1.9
    await asyncio.sleep(0.05)
    assert member.ops(Op.LEASE_REVOKE) == []  # not yet
    clock.now += 0.2
    await eventually(lambda: 7 not in fsm.kv.leases, "the revoke")
    assert fsm.kv.revision == rev + 1
    with pytest.raises(LeaseNotFoundError):
        await lessor.renew(7)
    clock.now += 10  # retry interval passes: nothing left to revoke, nothing proposed
    await asyncio.sleep(0.05)
    assert len(member.ops(Op.LEASE_REVOKE)) == 1
    assert fsm.kv.revision == rev + 1
    await lessor.stop()


async def test_renewal_of_a_lease_past_expiry_waits_for_its_revoke(setup: Setup) -> None:
    member, _, lessor, clock = setup
    member.lead(True)
    await grant(member, 3, 2)
    clock.now += 1.5
    assert await lessor.renew(3) == 2  # a full TTL from now
    assert lessor.remaining(3) == pytest.approx(2.0)
    member.revokes_open.clear()
    clock.now += 2.5  # past the new expiry: the loop proposes a revoke, held in flight
    await eventually(lambda: member.ops(Op.LEASE_REVOKE) != [], "the revoke proposal")
    renewal = asyncio.ensure_future(lessor.renew(3))
    await asyncio.sleep(0.05)
    assert not renewal.done()  # waits for the revoke rather than reviving the lease
    member.revokes_open.set()
    with pytest.raises(LeaseNotFoundError):
        await renewal
    await lessor.stop()


async def test_checkpoints_carry_the_remaining_ttl_and_renewal_clears_them(setup: Setup) -> None:
    member, fsm, lessor, clock = setup
    member.lead(True)
    await grant(member, 5, 30)
    await grant(member, 6, 4)  # below the interval: never checkpointed
    clock.now += 5.2
    await eventually(lambda: member.ops(Op.LEASE_CHECKPOINT) != [], "a checkpoint")
    batch = pb.LeaseCheckpointRequest.FromString(member.ops(Op.LEASE_CHECKPOINT)[0].body)
    assert [(c.ID, c.remaining_TTL) for c in batch.checkpoints] == [(5, 25)]
    lease = fsm.kv.leases.get(5)
    assert lease is not None and lease.remaining_ttl == 25
    assert await lessor.renew(5) == 30
    assert lease.remaining_ttl == 0  # cleared through Raft before answering
    cleared = pb.LeaseCheckpointRequest.FromString(member.ops(Op.LEASE_CHECKPOINT)[-1].body)
    assert [(c.ID, c.remaining_TTL) for c in cleared.checkpoints] == [(5, 0)]
    # A new leader resumes from the last checkpoint; here, none after the renewal: a full TTL.
    member.lead(False)
    member.lead(True)
    assert lessor.remaining(5) == pytest.approx(31.0)
    await lessor.stop()


async def test_a_pile_up_of_expiries_is_spread_on_promotion() -> None:
    fsm = EtcdStateMachine(min_lease_ttl=1)
    member = FakeMember(fsm)
    clock = FakeClock()
    lessor = Lessor(member, fsm, LessorConfig(extend=0.0, revoke_rate=8, tick=0.005), clock=clock)
    lessor.start()
    for i in range(1, 17):
        await grant(member, i, 10)
    member.lead(True)
    remaining = sorted(lessor.remaining(i) for i in range(1, 17))
    assert remaining[:6] == [pytest.approx(10.0)] * 6  # 3/4 of the rate expire on time
    assert remaining[6] > 11.0 and remaining[-1] > 12.5  # the rest pushed back, ~1 s per 6 leases
    member.lead(False)
    await lessor.stop()
