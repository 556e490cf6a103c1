"""The `flagstaff` command line: one entry point, a subcommand per process kind."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="flagstaff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print("flagstaff 0.1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
