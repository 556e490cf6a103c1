"""Group commit: many asyncio writers share the fsyncs of one background thread.

The contract of :class:`GroupCommitter`:

* ``await committer.commit(hard_state, entries)`` appends to the WAL
  *synchronously*, before its first suspension, so on one event loop the order
  of ``commit`` calls is the order of the records in the WAL. It returns (the
  record's append sequence number) once the record is on stable storage.
* A single thread runs :meth:`WAL.sync` in a loop. A sync covers every waiter
  registered before it started; everything appended while an fsync runs is
  covered by the next one, so under load one fsync makes a whole group of
  writers durable.
* If a sync fails, the waiters of that round, and every later one, get a
  :class:`WALError` (caused by the OS error); the WAL refuses further work.
* Cancelling a waiting task does not undo its append: the record may still
  become durable.
* :meth:`GroupCommitter.close` resolves the pending waiters and stops the
  thread; it does not close the WAL.

Synchronous callers use ``wal.save(...)`` and ``wal.sync()`` directly; both
styles may be mixed on one WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from consensus.raft.types import Entry, HardState
from consensus.storage.wal import WAL, WALError

_Waiter = tuple[int, "asyncio.Future[int]"]


class GroupCommitter:
    """Makes WAL appends from asyncio code durable, one fsync per group of concurrent writers."""

    def __init__(self, wal: WAL, *, thread_name: str = "wal-group-commit") -> None:
        self._wal = wal
        self._wakeup = threading.Condition()
        self._waiters: dict[asyncio.AbstractEventLoop, list[_Waiter]] = {}
        """Waiters not yet covered by a sync, by the loop their futures belong to."""
        self._closing = False
        self._failure: BaseException | None = None
        self._rounds = 0
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def rounds(self) -> int:
        """How many syncs the background thread has run."""
        return self._rounds

    async def commit(self, hard_state: HardState | None, entries: Sequence[Entry]) -> int:
        """Append ``entries`` then ``hard_state`` and wait until they are durable; the append seq."""
        seq = self._wal.save(hard_state, entries)
        await self.wait_durable(seq)
        return seq

    async def wait_durable(self, seq: int) -> None:
        """Wait until the append with sequence number ``seq`` is on stable storage."""
        if seq <= self._wal.durable_seq:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._wakeup:
            if self._failure is not None:
                raise WALError(f"WAL sync failed earlier: {self._failure!r}") from self._failure
            if self._closing:
                raise WALError("the group committer is closed")
            self._waiters.setdefault(loop, []).append((seq, future))
            self._wakeup.notify()
        await future

    def close(self) -> None:
        """Resolve every pending waiter (one last sync) and stop the thread. Idempotent."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._waiters and not self._closing:
                    self._wakeup.wait()
                if not self._waiters:
                    return  # closing, nothing left
                groups, self._waiters = self._waiters, {}
            # Every waiter in `groups` appended before registering, so this sync covers it.
            error: BaseException | None = None
            durable = 0
            try:
                durable = self._wal.sync()
            except BaseException as exc:
                error = exc
                with self._wakeup:
                    self._failure = exc
            self._rounds += 1
            _post(groups, durable, error)
            if error is not None:
                self._fail_pending(error)

    def _fail_pending(self, error: BaseException) -> None:
        """After a failed sync, nothing can become durable: fail whoever is still waiting."""
        with self._wakeup:
            groups, self._waiters = self._waiters, {}
        _post(groups, 0, error)


def _post(
    groups: dict[asyncio.AbstractEventLoop, list[_Waiter]],
    durable: int,
    error: BaseException | None,
) -> None:
    """Hand each loop its waiters' outcome (one wake-up per loop, not per waiter)."""
    for loop, waiters in groups.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(_resolve, waiters, durable, error)


def _resolve(waiters: list[_Waiter], durable: int, error: BaseException | None) -> None:
    """On the waiters' loop: complete each future with its seq, or the sync error."""
    for seq, future in waiters:
        if future.done():  # cancelled by its task
            continue
        if error is None and seq <= durable:
            future.set_result(seq)
        elif error is None:  # cannot happen: a waiter registers after its append
            future.set_exception(WALError(f"append {seq} not covered by sync up to {durable}"))
        else:
            failure = WALError(f"WAL sync failed: {error!r}")
            failure.__cause__ = error
            future.set_exception(failure)
