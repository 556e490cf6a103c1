"""The Lock and Election recipes (``consensus.client.recipes``) on the real core, with holders killed.

Holders are separate processes (``python -c``) killed with SIGKILL while they
hold the lock or lead: their session lease expires after its TTL and the next
contender takes over. Needs no database: only the session's core cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consensus.client import Client, compare_create, op_put
from consensus.client.recipes import Election, Leader, Lock, Session
from tests.cluster.harness import Cluster, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0

HOLDER = """
import asyncio, sys
from consensus.client import Client
from consensus.client.recipes import Election, Lock, Session

async def main() -> None:
    kind, name, endpoints = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    async with Client(endpoints) as client, Session(client, ttl=2) as session:
        if kind == "lock":
            token = await Lock(session, name).acquire()
            print("holding", token, f"{session.lease_id:x}", flush=True)
        else:
            election = Election(session, name)
            await election.campaign(sys.argv[4])
            print("leading", election.revision, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def endpoints(core_cluster: Cluster) -> list[str]:
    return [n.endpoint for n in core_cluster.nodes]


@pytest.fixture
def name() -> str:
    return f"r-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(procs: list[subprocess.Popen[bytes]], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, *args], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    procs.append(proc)
    return proc


def printed(log: Path, word: str) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith(word + " "):
            return int(line.split()[1])
    return None


def test_lock_passes_on_when_its_holder_is_killed_and_fences_the_old_holder(
        endpoints: list[str], name: str, holders: list[subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    log = tmp_path / "holder.log"
    holder = spawn(holders, log, "lock", name, ",".join(endpoints))
    old_token = wait_until(lambda: printed(log, "holding"), DEADLINE, "the holder to lock")
    old_key = f"/locks/{name}/" + log.read_text().split()[2]

    async def contend() -> tuple[int, bool, bool, bool]:
        async with Client(endpoints) as client, Session(client, ttl=5) as session:
            assert await client.get(old_key) is not None
            lock = Lock(session, name)
            with pytest.raises(TimeoutError):  # held by the other process
                await lock.acquire(timeout=0.5)
            waiting = asyncio.get_running_loop().create_task(lock.acquire(timeout=DEADLINE))
            os.kill(holder.pid, signal.SIGKILL)
            token = await waiting  # once the dead holder's session lease has expired
            held = await lock.is_held()
            # The dead holder's fencing token no longer guards anything; ours does.
            stale = await client.txn(compare=[compare_create(old_key, "=", old_token)],
                                     success=[op_put(f"/test/{name}/resource", "stale")])
            fresh = await client.txn(compare=[lock.guard()],
                                     success=[op_put(f"/test/{name}/resource", "fresh")])
            await lock.release()
            released = not await lock.is_held()
            return token, held and released, stale.succeeded, fresh.succeeded

    token, held_then_released, stale_ok, fresh_ok = asyncio.run(contend())
    assert token > old_token
    assert held_then_released
    assert not stale_ok and fresh_ok


def test_only_one_of_several_contenders_holds_the_lock_at_a_time(
        endpoints: list[str], name: str) -> None:
    async def run() -> list[tuple[str, int]]:
        async with Client(endpoints) as client:
            trace: list[tuple[str, int]] = []
            holding: set[int] = set()

            async def worker(i: int) -> None:
                async with Session(client, ttl=5) as session, Lock(session, name) as lock:
                    assert not holding, f"{i} acquired while {holding} held the lock"
                    holding.add(i)
                    trace.append(("acquired", lock.fencing_token))
                    await asyncio.sleep(0.05)
                    holding.discard(i)

            await asyncio.gather(*(worker(i) for i in range(4)))
            return trace

    trace = asyncio.run(run())
    tokens = [token for _, token in trace]
    assert len(tokens) == 4 and tokens == sorted(tokens)  # fencing tokens only grow


def test_election_leader_killed_the_next_candidate_leads_and_observers_see_it(
        endpoints: list[str], name: str, holders: list[subprocess.Popen[bytes]],
        tmp_path: Path) -> None:
    first_log, second_log = tmp_path / "a.log", tmp_path / "b.log"
    first = spawn(holders, first_log, "election", name, ",".join(endpoints), "candidate-a")
    wait_until(lambda: printed(first_log, "leading"), DEADLINE, "candidate-a to lead")
    spawn(holders, second_log, "election", name, ",".join(endpoints), "candidate-b")

    async def observe() -> list[bytes | None]:
        async with Client(endpoints) as client:
            seen: list[bytes | None] = []
            async for leader in Election.observe(client, name):
                seen.append(None if leader is None else leader.value)
                if seen == [b"candidate-a"]:
                    os.kill(first.pid, signal.SIGKILL)
                if seen[-1] == b"candidate-b":
                    break
            current = await Election.current(client, name)
            assert current is not None and current.value == b"candidate-b"
            return seen

    seen = asyncio.run(asyncio.wait_for(observe(), DEADLINE))
    assert seen == [b"candidate-a", b"candidate-b"]
    wait_until(lambda: printed(second_log, "leading"), DEADLINE, "candidate-b to say it leads")


def test_election_campaign_proclaim_resign(endpoints: list[str], name: str) -> None:
    async def run() -> list[bytes | None]:
        async with Client(endpoints) as client, Session(client, ttl=5) as one, \
                Session(client, ttl=5) as two:
            values: list[bytes | None] = []
            first, second = Election(one, name), Election(two, name)
            await first.campaign("one")
            with pytest.raises(TimeoutError):
                await second.campaign("two", timeout=0.3)
            await first.proclaim("one, again")
            values.append((await Election.current(client, name) or _none()).value)
            waiting = asyncio.get_running_loop().create_task(second.campaign("two"))
            await first.resign()
            await asyncio.wait_for(waiting, DEADLINE)
            values.append((await Election.current(client, name) or _none()).value)
            await second.resign()
            values.append(None if await Election.current(client, name) is None else b"?")
            return values

    assert asyncio.run(run()) == [b"one, again", b"two", None]


def _none() -> Leader:
    raise AssertionError("no leader")
