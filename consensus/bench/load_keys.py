"""A bulk loader for scale measurements: N keys of fixed-size values, 128 puts per txn.

Used for "resident memory with 1M keys of 100-byte values" (docs/performance.md)
against any etcd v3 endpoint; prints the count loaded, the time taken and,
given the server's pid, its resident memory from /proc.

    python -m consensus.bench.load_keys 127.0.0.1:2379 --pid 1234 --keys 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from consensus.client import Client, op_put


def resident_mib(pid: int) -> int:
    """The process's VmRSS in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise ValueError(f"no VmRSS for pid {pid}")


async def load(endpoint: str, keys: int, value_size: int, per_txn: int, clients: int) -> float:
    """Put ``keys`` keys (``key/%08d``) through ``clients`` concurrent txn writers; the seconds taken."""
    value = b"v" * value_size
    next_index = 0
    async with Client([endpoint], timeout=60.0) as client:

        async def writer() -> None:
            nonlocal next_index
            while next_index < keys:
                start = next_index
                next_index += per_txn
                ops = [op_put(b"key/%08d" % i, value) for i in range(start, min(start + per_txn, keys))]
                await client.txn(success=ops)

        began = time.monotonic()
        await asyncio.gather(*(writer() for _ in range(clients)))
        return time.monotonic() - began


async def count(endpoint: str) -> int:
    async with Client([endpoint], timeout=60.0) as client:
        r = await client.range(b"key/", b"key0", count_only=True)
        return int(r.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("endpoint")
    parser.add_argument("--pid", type=int, default=0, help="the server's pid, to report its RSS")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--per-txn", type=int, default=128)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    seconds = asyncio.run(load(args.endpoint, args.keys, args.value_size, args.per_txn, args.clients))
    loaded = asyncio.run(count(args.endpoint))
    rss = f"; RSS {resident_mib(args.pid)} MiB" if args.pid else ""
    print(f"{args.endpoint}: {loaded} keys loaded in {seconds:.0f} s{rss}")


if __name__ == "__main__":
    main()
