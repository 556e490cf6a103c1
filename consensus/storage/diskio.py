"""Disk primitives shared by the WAL and the snapshot store.

Complete writes (``os.write``/``os.pwrite`` may write less than asked), data
and directory fsync, whole-file reads and the CRC32C checksum. Everything goes
through ``os`` file descriptors directly: no Python-level buffering, so what
the callers count as written is exactly what the kernel was handed.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
from collections.abc import Callable, Iterator
from typing import TypeAlias

import crc32c as _crc32c

Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
"""Anything the kernel and the checksum accept as bytes."""

_ZEROS = bytes(1 << 20)

crc32c: Callable[[Buffer, int], int] = _crc32c.crc32c
"""CRC32C (Castagnoli) of ``data``, continuing from ``value`` (0 to start)."""


def write_all(fd: int, data: Buffer) -> None:
    """Write all of ``data`` at ``fd``'s current position."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, data: Buffer, offset: int) -> None:
    """Write all of ``data`` at byte ``offset`` of ``fd`` (the file position is untouched)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def sync_data(fd: int) -> None:
    """Make ``fd``'s data (and the size needed to read it back) durable: fdatasync."""
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS has no fdatasync
        os.fsync(fd)


def fsync_dir(path: str) -> None:
    """Make the entries of directory ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_up_to(f: io.RawIOBase, length: int) -> bytes:
    """Up to ``length`` bytes from ``f`` (fewer only at end of file), in one buffer when it can.

    A single read returns at most ~2 GiB on Linux, so large lengths loop; a
    length that one read satisfies comes back without a joining copy.
    """
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = f.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # b"" when nothing was read


@contextlib.contextmanager
def mapped_file(path: str) -> Iterator[mmap.mmap | bytes]:
    """The file at ``path`` mapped read-only (``b""`` when empty), for scanning without a copy.

    Only the pages that are looked at are read, which matters for a preallocated
    segment that is mostly zeros.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size == 0:
            yield b""
            return
        mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)  # the mapping keeps its own reference to the file
    try:
        yield mapping
    finally:
        # Views still referenced (e.g. by a traceback) keep it mapped until collected.
        with contextlib.suppress(BufferError):
            mapping.close()


def is_zero_from(data: bytes | mmap.mmap, start: int) -> bool:
    """Whether every byte of ``data`` from ``start`` on is zero."""
    size = len(data)
    chunk = len(_ZEROS)
    for position in range(start, size, chunk):
        end = min(size, position + chunk)
        if data[position:end] != _ZEROS[: end - position]:
            return False
    return True
