"""A runner for data-driven test files, after cockroachdb/datadriven.

A file is a sequence of directives separated by blank lines; ``#`` lines are
comments. A directive is a command line, optional input lines, a ``----``
separator and the expected output::

    # A comment.
    propose 1 data
    ----
    ok

An expected output that contains blank lines is fenced by a doubled
separator (``----`` ``----`` before it and after it). The command line is
``command arg arg...`` where an argument is ``key``, ``key=value``,
``key=(v1,v2)``, ``(v1 v2)`` or a ``"quoted string"``.

:func:`run_file` executes every directive with a handler and compares the
output; with ``rewrite=True`` it writes the actual outputs back instead.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SEPARATOR = "----"


@dataclass(slots=True)
class CmdArg:
    """One argument of a command: ``key`` with no, one or several values."""

    key: str
    vals: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Directive:
    """One directive of a data-driven file: its position, command, arguments, input and expected output."""

    pos: str
    cmd: str
    args: list[CmdArg]
    input: str
    expected: str
    # Lines [start, end) of the file that this directive occupies.
    start: int = 0
    end: int = 0

    def arg(self, key: str) -> CmdArg | None:
        """The argument named ``key``, if given."""
        return next((a for a in self.args if a.key == key), None)

    def positional(self) -> list[str]:
        """The bare words (arguments without ``=`` or parentheses), in order."""
        return [a.key for a in self.args if a.key and not a.vals]

    def groups(self) -> list[list[str]]:
        """The bare parenthesized groups, ``(1) (2 3)`` -> ``[["1"], ["2", "3"]]``."""
        return [a.vals for a in self.args if not a.key]


def _split_vals(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        return [v for v in text[1:-1].replace(",", " ").split() if v]
    return [text]


def parse_args(line: str) -> tuple[str, list[CmdArg]]:
    """Split a command line into the command and its arguments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars="()")
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.wordchars += "=,-./:"
    tokens = list(lexer)
    if not tokens:
        raise ValueError("empty command line")
    cmd, rest = tokens[0], tokens[1:]
    args: list[CmdArg] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok == "(":
            close = rest.index(")", i)
            args.append(CmdArg("", _split_vals("(" + " ".join(rest[i + 1 : close]) + ")")))
            i = close + 1
            continue
        if tok.endswith("=") and i + 1 < len(rest) and rest[i + 1] == "(":
            close = rest.index(")", i)
            inner = " ".join(rest[i + 2 : close])
            args.append(CmdArg(tok[:-1], _split_vals("(" + inner + ")")))
            i = close + 1
            continue
        if "=" in tok:
            key, _, val = tok.partition("=")
            args.append(CmdArg(key, [val]))
        else:
            args.append(CmdArg(tok))
        i += 1
    return cmd, args


def parse(text: str, path: str = "<text>") -> list[Directive]:
    """Parse a data-driven file into its directives."""
    lines = text.split("\n")
    out: list[Directive] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start = i
        cmd, args = parse_args(line)
        i += 1
        inp: list[str] = []
        while i < len(lines) and lines[i] != SEPARATOR:
            if not lines[i].strip():
                raise ValueError(f"{path}:{start + 1}: missing {SEPARATOR} after {cmd!r}")
            inp.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: missing {SEPARATOR} after {cmd!r}")
        i += 1
        expected: list[str] = []
        if i < len(lines) and lines[i] == SEPARATOR:  # fenced output, may hold blank lines
            i += 1
            while not (lines[i] == SEPARATOR and i + 1 < len(lines) and lines[i + 1] == SEPARATOR):
                expected.append(lines[i])
                i += 1
                if i >= len(lines):
                    raise ValueError(f"{path}:{start + 1}: unterminated fenced output")
            i += 2
        else:
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i])
                i += 1
        out.append(
            Directive(
                pos=f"{path}:{start + 1}",
                cmd=cmd,
                args=args,
                input="\n".join(inp),
                expected="\n".join(expected),
                start=start,
                end=i,
            )
        )
    return out


def format_output(output: str) -> list[str]:
    """The lines recorded after a directive's separator for ``output``."""
    body = output.rstrip("\n").split("\n") if output.strip() else []
    if any(not ln.strip() for ln in body):
        return [SEPARATOR, SEPARATOR, *body, SEPARATOR, SEPARATOR]
    return [SEPARATOR, *body]


def run_file(path: Path, handler: Callable[[Directive], str], *, rewrite: bool = False) -> None:
    """Run every directive of ``path`` through ``handler`` and check (or rewrite) the outputs.

    Without ``rewrite``, raises AssertionError with a diff at the first
    directive whose output differs from the expected one.
    """
    text = path.read_text()
    lines = text.split("\n")
    directives = parse(text, str(path))
    new_lines: list[str] = []
    prev_end = 0
    for d in directives:
        actual = handler(d).rstrip("\n")
        actual = "\n".join(ln.rstrip() for ln in actual.split("\n"))
        if not rewrite and actual != d.expected:
            diff = "\n".join(
                difflib.unified_diff(
                    d.expected.split("\n"), actual.split("\n"), "expected", "actual", lineterm=""
                )
            )
            raise AssertionError(
                f"{d.pos}: output of {lines[d.start]!r} differs"
                f" (run with --rewrite or REWRITE=1 to accept):\n{diff}"
            )
        head = lines[d.start : d.start + 1 + (d.input.count("\n") + 1 if d.input else 0)]
        new_lines += lines[prev_end : d.start] + head + format_output(actual)
        prev_end = d.end
    new_lines += lines[prev_end:]
    if rewrite:
        new_text = "\n".join(new_lines)
        if new_text != text:
            path.write_text(new_text)
