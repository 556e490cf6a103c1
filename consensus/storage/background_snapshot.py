"""A background snapshot: one snapshot file written by a forked child from a copy-on-write image.

A member keeps its whole state in memory. Encoding that state (tens to
hundreds of MB once the store holds history and the audit trail) and writing
it is a second or more of pure-Python work; done on the Raft loop, it stalls
heartbeats, appends and reads for that long on every member at once (they all
reach ``--snapshot-count`` at the same index), which clients see as a latency
spike and followers may take for a dead leader.

So, as Redis's ``BGSAVE`` does, the member forks. The child sees the state
exactly as it was at the fork -- every entry up to ``metadata.index`` applied,
nothing after -- because the kernel gives it a copy-on-write image of the
parent's memory. It encodes that image, writes the snapshot file through
:meth:`SnapshotStore.save` (temp file, fsync, rename, directory fsync) at a
lower CPU priority, and exits. The parent goes on serving; :meth:`result`
waits (in a thread) for the child to exit and reads the verified file back.
The caller then adopts it (:meth:`DurableLog.adopt_snapshot`: the WAL marker,
then compaction), so the order "snapshot file durable, then marker" that
recovery relies on is the same as for a snapshot written in-line.

Contract for ``encode`` (it runs in the child only): read the state and return
bytes; never touch the event loop, sockets, gRPC or a lock another thread may
hold (only the forking thread exists in the child).

Invariants:

- The child never outlives the member: it asks the kernel for SIGKILL when its
  parent dies (``PR_SET_PDEATHSIG``), and :meth:`cancel` kills it on shutdown.
  A member killed mid-snapshot therefore leaves at most a ``.tmp`` file, which
  :class:`SnapshotStore` removes when it opens, and never holds its ports
  through an orphan.
- A file appears under its final name only complete and fsynced
  (:meth:`SnapshotStore.save`); one that nobody adopts (the member stopped, or
  a newer snapshot got there first) is newer than the WAL's marker at worst,
  and recovery ignores and deletes such files (``discard_newer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable

from consensus.raft.types import Snapshot, SnapshotMetadata
from consensus.storage.snapshot_store import SnapshotStore

CHILD_NICENESS = 10
"""How much lower the child's CPU priority is: the Raft loops come first."""

_PR_SET_PDEATHSIG = 1


class SnapshotWriteError(Exception):
    """The child writing a background snapshot failed (its reason is on the member's stderr)."""


_GRPC_FORK_SUPPORT = "GRPC_ENABLE_FORK_SUPPORT"
_grpc_fork_handlers_off = False


def disable_grpc_fork_handlers() -> None:
    """Turn gRPC's fork handlers off in this process; call before ``grpc`` is imported.

    With them on (gRPC's default), a child forked while gRPC's threads are busy
    runs gRPC's post-fork code and may crash (SIGSEGV) although it never uses
    gRPC; with them off, the child simply does not have gRPC. The member's only
    child is the background snapshot writer, which never touches gRPC. An
    explicit setting in the environment is respected (and, if it turns the
    handlers on, snapshots are written in-line: see :func:`fork_supported`).
    """
    global _grpc_fork_handlers_off
    os.environ.setdefault(_GRPC_FORK_SUPPORT, "false")
    if "grpc" not in sys.modules and _grpc_fork_disabled_by_environment():
        _grpc_fork_handlers_off = True


def _grpc_fork_disabled_by_environment() -> bool:
    return os.environ.get(_GRPC_FORK_SUPPORT, "").strip().lower() in ("0", "false", "no", "off")


def fork_supported() -> bool:
    """Whether snapshots can be written by a forked child in this process.

    Linux, and gRPC either not loaded or loaded with its fork handlers off
    (:func:`disable_grpc_fork_handlers` ran first).
    """
    if not (hasattr(os, "fork") and sys.platform.startswith("linux")):
        return False
    return _grpc_fork_handlers_off or "grpc" not in sys.modules


class BackgroundSnapshot:
    """A snapshot being written by a forked child; await :meth:`result`, or :meth:`cancel` it."""

    def __init__(self, pid: int, store: SnapshotStore, metadata: SnapshotMetadata) -> None:
        """Internal: use :meth:`start`."""
        self.pid = pid
        self.metadata = metadata
        self._store = store
        self._exited = False

    @classmethod
    def start(
        cls, store: SnapshotStore, metadata: SnapshotMetadata, encode: Callable[[], bytes]
    ) -> BackgroundSnapshot:
        """Fork a child that writes ``Snapshot(encode(), metadata)`` into ``store``, and return at once."""
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; its effect (the file) is what tests check
            _run_child(parent, store, metadata, encode)
        return cls(pid, store, metadata)

    async def result(self) -> Snapshot:
        """Wait for the child; the snapshot it wrote, read back and verified.

        Raises :class:`SnapshotWriteError` when the child failed or was killed.
        """
        status = await asyncio.to_thread(self._wait)
        if status != 0:
            reason = (
                f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            )
            raise SnapshotWriteError(
                f"the child writing the snapshot at {self.metadata.index} {reason}"
            )
        return await asyncio.to_thread(self._store.load, self.metadata.index, self.metadata.term)

    def cancel(self) -> None:
        """Kill the child (if it is still running); :meth:`result` then raises. Idempotent."""
        if not self._exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self._exited = True
        return os.waitstatus_to_exitcode(status)


def _run_child(
    parent: int, store: SnapshotStore, metadata: SnapshotMetadata, encode: Callable[[], bytes]
) -> None:  # pragma: no cover - runs in the forked child
    """The child's whole life: die with the parent, encode, save, exit (never returns)."""
    code = 1
    try:
        # No garbage collection: it would touch (and so copy) every page of the image.
        gc.disable()
        # Signals meant for the member must not reach its event loop through the
        # inherited wakeup fd; the child just dies on them.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        _die_with_parent(parent)
        os.nice(CHILD_NICENESS)
        store.save(Snapshot(data=encode(), metadata=metadata))
        code = 0
    except BaseException:
        try:
            message = f"background snapshot at {metadata.index} failed:\n{traceback.format_exc()}"
            os.write(2, message.encode("utf-8", "replace"))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """Ask for SIGKILL when the parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(1)
