"""Automatic compaction of the key space's history: etcd 3.4's ``--auto-compaction-*`` flags.

Two policies, as in etcd 3.4 (``etcdserver/api/v3compactor``):

* ``periodic``: keep a time window of history. The retention is a duration
  (``"30m"``, ``"1h30m"``, Go's syntax) or a whole number of hours
  (``"1"``). Every tenth of the window (of an hour at most) the compactor
  notes the current revision; once a window has passed (an hour at most
  between two compactions) it compacts to the revision noted a window ago.
* ``revision``: keep the last N revisions. Every 5 minutes the compactor
  compacts to ``current revision - N`` (unless that is not past the last one).

A retention of ``"0"`` disables it. Every member samples revisions, only the
leader compacts (it is paused on the others, as etcd pauses it), and the
compaction is an ordinary ``Compaction`` request proposed through Raft, so
every member drops the same history at the same point in the log. A target
that is already compacted counts as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message as PbMessage

from consensus.api.gen.etcd.etcdserverpb import rpc_pb2 as pb
from consensus.mvcc import CompactedError
from consensus.server.etcd_state import EtcdStateMachine
from consensus.server.internal_request import Op

log = logging.getLogger(__name__)

MODE_PERIODIC = "periodic"
MODE_REVISION = "revision"

HOUR = 3600.0
RETRY_DIVISOR = 10
"""A periodic compactor samples the revision every (window, at most an hour) / 10."""

REVISION_INTERVAL = 300.0
"""A revision compactor runs every 5 minutes (etcd's ``revInterval``)."""

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # Go accepts both micro signs
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": HOUR,
}
_GO_TERM = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string (``"1h30m"``, ``"1.5s"``, ``"0"``); ValueError if malformed."""
    s = text.strip()
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _GO_TERM.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """A parsed auto-compaction setting: a time window (periodic) or a revision count."""

    mode: str
    retention: float
    """Seconds (periodic) or revisions (revision)."""


def parse_policy(mode: str, retention: str) -> CompactionPolicy | None:
    """The policy for ``--auto-compaction-mode/--auto-compaction-retention``; None when disabled.

    Raises ValueError (naming the flag) for a malformed or negative retention.
    """
    text = retention.strip()
    if mode == MODE_PERIODIC:
        if text.isdigit():
            seconds = int(text) * HOUR
        else:
            try:
                seconds = parse_go_duration(text)
            except ValueError as exc:
                raise ValueError(f"error parsing --auto-compaction-retention: {exc}") from None
        if seconds < 0:
            raise ValueError("--auto-compaction-retention must not be negative")
        return CompactionPolicy(MODE_PERIODIC, seconds) if seconds > 0 else None
    if mode == MODE_REVISION:
        try:
            revisions = int(text, 10)
        except ValueError:
            raise ValueError(
                f"error parsing --auto-compaction-retention: {retention!r} is not a revision count"
            ) from None
        if revisions < 0:
            raise ValueError("--auto-compaction-retention must not be negative")
        return CompactionPolicy(MODE_REVISION, revisions) if revisions > 0 else None
    raise ValueError(f"unknown --auto-compaction-mode {mode!r} (periodic or revision)")


Compact = Callable[[int], Awaitable[object]]
"""Propose a compaction to a revision through Raft (raises what the compaction raises)."""


class AutoCompactor:
    """Runs one policy in the background; compacts only while resumed (on the leader).

    ``clock`` and ``sleep`` are injectable so that the schedule can be tested
    in virtual time.
    """

    def __init__(
        self,
        policy: CompactionPolicy,
        *,
        current_revision: Callable[[], int],
        compact: Compact,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        revision_interval: float = REVISION_INTERVAL,
    ) -> None:
        self.policy = policy
        self._current_revision = current_revision
        self._compact = compact
        self._clock = clock
        self._sleep = sleep
        self._revision_interval = revision_interval
        self.paused = True
        """Paused until this member leads (``resume``); etcd pauses followers' compactors."""
        self.compacted: list[int] = []
        """Revisions this compactor compacted to (or found compacted), oldest first."""
        self._task: asyncio.Task[None] | None = None

    # -- control ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="auto-compaction")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def on_leadership(self, leading: bool) -> None:
        """A ``Member.on_leadership`` listener: compact only while leading."""
        if leading:
            self.resume()
        else:
            self.pause()

    # -- the schedules ---------------------------------------------------------------------------
    async def run(self) -> None:
        if self.policy.mode == MODE_PERIODIC:
            await self._run_periodic(self.policy.retention)
        else:
            await self._run_revision(int(self.policy.retention))

    async def _run_periodic(self, period: float) -> None:
        window = min(period, HOUR)  # compact at least hourly, however long the retention
        retry = window / RETRY_DIVISOR
        retentions = int(period // retry) + 1
        revs: list[int] = []
        last_success = self._clock()
        base = period  # the first compaction waits a whole retention period
        while True:
            revs.append(self._current_revision())
            if len(revs) > retentions:
                del revs[0]  # revs[0] is the revision of one period ago
            await self._sleep(retry)
            if self.paused or self._clock() - last_success < base:
                continue
            base = window
            if await self._try_compact(revs[0]):
                last_success = self._clock()

    async def _run_revision(self, keep: int) -> None:
        previous = 0
        while True:
            await self._sleep(self._revision_interval)
            if self.paused:
                continue
            target = self._current_revision() - keep
            if target <= 0 or target == previous:
                continue
            if await self._try_compact(target):
                previous = target

    async def _try_compact(self, revision: int) -> bool:
        log.info("starting auto %s compaction at revision %d", self.policy.mode, revision)
        try:
            await self._compact(revision)
        except CompactedError:
            pass  # someone compacted past it already: as good as done
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("auto %s compaction at revision %d failed: %s", self.policy.mode, revision, exc)
            return False
        log.info("completed auto %s compaction at revision %d", self.policy.mode, revision)
        self.compacted.append(revision)
        return True


class _Proposer(Protocol):
    """``EtcdServer``: how the compactor reads the revision and proposes a compaction."""

    @property
    def fsm(self) -> EtcdStateMachine: ...

    async def propose(self, op: Op, request: PbMessage, context: None = None) -> object: ...


class _Leadership(Protocol):
    """``Member``: tells the compactor when this member leads."""

    def on_leadership(self, listener: Callable[[bool], None]) -> Callable[[], None]: ...


def start(policy: CompactionPolicy, member: _Leadership, server: _Proposer) -> AutoCompactor:
    """Run ``policy`` for one member: sample always, compact through Raft while leading."""

    async def compact(revision: int) -> object:
        return await server.propose(Op.COMPACTION, pb.CompactionRequest(revision=revision))

    compactor = AutoCompactor(
        policy, current_revision=lambda: server.fsm.kv.revision, compact=compact
    )
    member.on_leadership(compactor.on_leadership)
    compactor.start()
    log.info(
        "auto compaction: %s, retention %s", policy.mode,
        f"{policy.retention:g}s" if policy.mode == MODE_PERIODIC else f"{int(policy.retention)} revisions",
    )
    return compactor
