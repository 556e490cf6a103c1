"""The `flagstaff` command line: one entry point, a subcommand per process kind.

Each subcommand lives with the code it drives and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. This module only wires
them up, importing each lazily so that ``flagstaff sim`` never pays for gRPC.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Protocol, cast

# subcommand -> (module, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "node": ("consensus.server.command", "run one core member (etcd-compatible flags)"),
    "sim": ("consensus.sim.command", "run the deterministic Raft simulator over many seeds"),
    "up": ("consensus.up", "start the whole system on 127.0.0.1 (embedded defaults)"),
    "snapshot": ("consensus.server.snapshot_command", "save/restore/status of core snapshots"),
    "bench": ("consensus.bench.command", "benchmark any etcd v3 endpoint"),
    "bench-core": ("consensus.bench.core_command", "raw core benchmarks: simulator and WAL"),
}


class SubcommandModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(name: str) -> SubcommandModule | None:
    module_name, _ = SUBCOMMANDS[name]
    try:
        return cast(SubcommandModule, importlib.import_module(module_name))
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None  # not built yet in this checkout
        raise


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flagstaff", description="Flagstaff: configuration, flags and discovery on Raft."
    )
    parser.add_argument("--version", action="version", version="flagstaff 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only import the module of the subcommand actually asked for (cheap --help too).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:
            module = _load(name)
            if module is not None:
                module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    module = _load(args.command)
    if module is None:
        parser.error(f"'{args.command}' is not available in this build")
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
