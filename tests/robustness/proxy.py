"""A userspace TCP proxy for peer traffic: partitions, latency and message loss between members.

Why a proxy: on this machine ``tc netem`` is missing (``Specified qdisc kind
is unknown``), iptables/nftables are not installed, and a partition must cut
*peer* traffic while clients stay connected to the isolated member. Members
listen on their real peer port and advertise the proxy's port in
``--initial-cluster``, so every peer connection to member X enters the proxy
at X's proxy port and is forwarded to X's real port. The proxy reads the
peer handshake (``consensus.server.transport``: magic, version, kind,
cluster id, sender id, recipient id) to learn which directed edge
``sender -> recipient`` a connection carries, and applies that edge's rule:

* ``pass`` (default), optionally with ``delay_ms``/``jitter_ms`` added to
  every chunk (order preserved) and ``loss`` — the probability of dropping a
  whole message frame on a message stream (frames stay intact, so the stream
  stays decodable, like packet loss under TCP retransmission appears to Raft
  as lost or late messages after a reconnect);
* ``blackhole`` — bytes are silently discarded in both directions and new
  connections get no handshake reply (like a real partition: no RST, the
  sender's writes and dials time out). A connection that was blackholed is
  closed when the rule is lifted, since bytes were lost mid-stream;
* ``cut`` — existing connections are reset and new ones closed at once.

It runs as its own process (``python -m tests.robustness.proxy --control-port
P``) so the test's event loop never delays peer traffic. Control: one JSON
object per line on the control port, answered by one JSON line:
``{"op": "route", "listen": P, "target": Q}``, ``{"op": "rules", "rules":
[{"from": "<hex id>|*", "to": "<hex id>|*", "action": ..., "delay_ms": ...,
"jitter_ms": ..., "loss": ...}]}`` (first match wins), ``{"op": "stats"}``.
:class:`PeerProxy` is the test-side handle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

_HANDSHAKE = struct.Struct("<4sBBQQQ")
STREAM_MESSAGES = 1
_FRAME = struct.Struct("<I")


@dataclass
class Rule:
    """What happens to traffic on matching edges."""

    src: str = "*"
    dst: str = "*"
    action: str = "pass"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def matches(self, src: str, dst: str) -> bool:
        """Whether this rule applies to the edge ``src -> dst``."""
        return self.src in ("*", src) and self.dst in ("*", dst)


PASS = Rule()


@dataclass(eq=False)
class _Conn:
    """One proxied connection: its edge, its two sockets, and whether it was ever blackholed."""

    src: str
    dst: str
    kind: int
    down: asyncio.StreamWriter
    up: asyncio.StreamWriter | None
    poisoned: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        """Reset both sockets and stop the pumps."""
        for w in (self.down, self.up):
            if w is not None:
                with contextlib.suppress(Exception):
                    sock = w.get_extra_info("socket")
                    if sock is not None:
                        # RST rather than FIN: the peer sees a reset connection at once.
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    w.close()
        for t in self.tasks:
            t.cancel()


class ProxyServer:
    """The proxy process's state: routes, rules, live connections, counters."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[Rule] = []
        self.conns: set[_Conn] = set()
        self.servers: list[asyncio.Server] = []
        self.rng = random.Random(seed)
        self.stats: dict[str, int] = {
            "connections": 0, "bytes": 0, "frames_dropped": 0, "blackholed_bytes": 0, "cut": 0,
        }

    def rule(self, src: str, dst: str) -> Rule:
        """The first rule matching the edge (pass by default)."""
        for r in self.rules:
            if r.matches(src, dst):
                return r
        return PASS

    async def add_route(self, listen: int, target: int) -> None:
        """Listen on ``listen`` and forward every connection to ``target``."""
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(reader, writer, target)

        server = await asyncio.start_server(accepted, "127.0.0.1", listen, reuse_address=True)
        self.servers.append(server)

    def set_rules(self, rules: list[Rule]) -> None:
        """Replace the rules; cut or poison the live connections they now cover."""
        self.rules = rules
        for conn in list(self.conns):
            r = self.rule(conn.src, conn.dst)
            if r.action == "cut" or (conn.poisoned and r.action == "pass"):
                self.stats["cut"] += 1
                conn.close()
                self.conns.discard(conn)
            elif r.action == "blackhole":
                conn.poisoned = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int) -> None:
        self.stats["connections"] += 1
        try:
            head = await asyncio.wait_for(reader.readexactly(_HANDSHAKE.size), 10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            writer.close()
            return
        _magic, _version, kind, _cluster, sender, recipient = _HANDSHAKE.unpack(head)
        src, dst = f"{sender:x}", f"{recipient:x}"
        rule = self.rule(src, dst)
        if rule.action == "cut":
            writer.close()
            return
        conn = _Conn(src, dst, kind, writer, None, poisoned=rule.action == "blackhole")
        self.conns.add(conn)
        try:
            if conn.poisoned:
                await self._discard(reader, conn)
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", target), 5)
            except (TimeoutError, OSError):
                return
            conn.up = up_writer
            up_writer.write(head)
            framed = kind == STREAM_MESSAGES
            loop = asyncio.get_running_loop()
            conn.tasks = [
                loop.create_task(self._pump(reader, up_writer, conn, framed)),
                loop.create_task(self._pump(up_reader, writer, conn, False)),
            ]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            conn.close()
            self.conns.discard(conn)

    async def _discard(self, reader: asyncio.StreamReader, conn: _Conn) -> None:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                return
            self.stats["blackholed_bytes"] += len(chunk)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn, framed: bool
    ) -> None:
        """Copy ``reader`` to ``writer`` applying the edge's rule to each chunk (frames when ``framed``)."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.get_running_loop().create_task(self._deliver(queue, writer))
        buf = bytearray()
        try:
            while True:
                try:
                    chunk = await reader.read(1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                rule = self.rule(conn.src, conn.dst)
                if conn.poisoned or rule.action == "blackhole":
                    conn.poisoned = True
                    self.stats["blackholed_bytes"] += len(chunk)
                    continue
                if framed:
                    # Forward whole frames only, so dropping one (loss) keeps the stream decodable.
                    buf += chunk
                    out = bytearray()
                    pos = 0
                    while len(buf) - pos >= 4:
                        (n,) = _FRAME.unpack_from(buf, pos)
                        if len(buf) - pos < 4 + n:
                            break
                        if rule.loss > 0 and self.rng.random() < rule.loss:
                            self.stats["frames_dropped"] += 1
                        else:
                            out += buf[pos : pos + 4 + n]
                        pos += 4 + n
                    del buf[:pos]
                    data = bytes(out)
                else:
                    data = chunk
                if not data:
                    continue
                self.stats["bytes"] += len(data)
                delay = rule.delay_ms + (self.rng.random() * rule.jitter_ms if rule.jitter_ms else 0.0)
                queue.put_nowait((time.monotonic() + delay / 1000, data))
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender

    async def _deliver(self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter) -> None:
        last = 0.0
        while True:
            item = await queue.get()
            if item is None:
                with contextlib.suppress(Exception):
                    writer.close()
                return
            at, data = item
            at = max(at, last)  # never reorder: jitter only adds delay
            last = at
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                writer.write(data)
                await writer.drain()
            except (OSError, RuntimeError):
                return

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one control connection: JSON commands in, JSON replies out."""
        while True:
            line = await reader.readline()
            if not line:
                writer.close()
                return
            try:
                msg = json.loads(line)
                reply = await self._handle(msg)
            except Exception as exc:  # a bad command is answered, never fatal
                reply = {"ok": False, "error": repr(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    async def _handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "route":
            await self.add_route(int(msg["listen"]), int(msg["target"]))
            return {"ok": True}
        if op == "rules":
            self.set_rules([
                Rule(r.get("from", "*"), r.get("to", "*"), r.get("action", "pass"),
                     float(r.get("delay_ms", 0)), float(r.get("jitter_ms", 0)), float(r.get("loss", 0)))
                for r in msg.get("rules", [])
            ])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": dict(self.stats), "live": len(self.conns)}
        return {"ok": False, "error": f"unknown op {op!r}"}


async def _main(control_port: int, seed: int) -> None:
    proxy = ProxyServer(seed)
    server = await asyncio.start_server(proxy.control, "127.0.0.1", control_port, reuse_address=True)
    print(f"proxy control on 127.0.0.1:{control_port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Command line: run the proxy process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(_main(args.control_port, args.seed))
    except ImportError:  # pragma: no cover
        asyncio.run(_main(args.control_port, args.seed))
    except KeyboardInterrupt:
        pass
    return 0


class PeerProxy:
    """The test-side handle of a proxy process: routes, rules, stats (blocking calls, ~1 ms each)."""

    def __init__(self, control_port: int) -> None:
        self.control_port = control_port
        self._sock: socket.socket | None = None
        self._file: Any = None

    def _call(self, msg: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        if self._sock is None:
            self._sock = socket.create_connection(("127.0.0.1", self.control_port), timeout=timeout)
            self._file = self._sock.makefile("rwb")
        self._file.write(json.dumps(msg).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ConnectionError("proxy control connection closed")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"proxy refused {msg}: {reply.get('error')}")
        return reply

    def route(self, listen: int, target: int) -> None:
        """Forward the proxy port ``listen`` to the member port ``target``."""
        self._call({"op": "route", "listen": listen, "target": target})

    def set_rules(self, rules: list[dict[str, Any]]) -> None:
        """Replace the rules; cut or poison the live connections they now cover."""
        self._call({"op": "rules", "rules": rules})

    def heal(self) -> None:
        """Remove every rule."""
        self.set_rules([])

    def stats(self) -> dict[str, Any]:
        """The proxy's counters (connections, bytes, frames dropped, ...)."""
        return self._call({"op": "stats"})

    def close(self) -> None:
        """Reset both sockets and stop the pumps."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


if __name__ == "__main__":
    sys.exit(main())
