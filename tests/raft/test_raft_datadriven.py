"""Tests of the data-driven file runner: parsing, comparison, and rewriting in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.raft.testing.datadriven import (
    CmdArg,
    Directive,
    format_output,
    parse,
    parse_args,
    run_file,
)


def test_parse_args() -> None:
    assert parse_args("add-nodes 3 voters=(1,2,3) index=2 bootstrap") == (
        "add-nodes",
        [
            CmdArg("3"),
            CmdArg("voters", ["1", "2", "3"]),
            CmdArg("index", ["2"]),
            CmdArg("bootstrap"),
        ],
    )
    assert parse_args("partition (1) (2 3)")[1] == [CmdArg("", ["1"]), CmdArg("", ["2", "3"])]
    assert parse_args('propose 1 "two words"')[1] == [CmdArg("1"), CmdArg("two words")]
    assert parse_args("x k=( 1 , 2 ) #3")[1] == [CmdArg("k", ["1", "2"]), CmdArg("#3")]


def test_directive_accessors() -> None:
    _, args = parse_args("cmd 1 2 key=v (3 4)")
    d = Directive(pos="f:1", cmd="cmd", args=args, input="", expected="")
    assert d.positional() == ["1", "2"]
    assert d.groups() == [["3", "4"]]
    assert d.arg("key") == CmdArg("key", ["v"])
    assert d.arg("missing") is None


TEXT = """# A comment.

first a=1
input line
----
out 1
out 2

# Between directives.
second
----
----
with

blank line
----
----

third
----
"""


def test_parse() -> None:
    ds = parse(TEXT, "t.txt")
    assert [d.cmd for d in ds] == ["first", "second", "third"]
    assert ds[0].input == "input line"
    assert ds[0].expected == "out 1\nout 2"
    assert ds[0].pos == "t.txt:3"
    assert ds[1].expected == "with\n\nblank line"
    assert ds[2].expected == ""


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="missing ----"):
        parse("cmd\n\n----\n", "t")
    with pytest.raises(ValueError, match="missing ----"):
        parse("cmd\n", "t")


def test_format_output() -> None:
    assert format_output("a\nb\n") == ["----", "a", "b"]
    assert format_output("") == ["----"]
    assert format_output("a\n\nb") == ["----", "----", "a", "", "b", "----", "----"]


def echo(d: Directive) -> str:
    """A handler that prints its command (and, for `second`, a blank line)."""
    if d.cmd == "second":
        return "with\n\nblank line"
    return f"ran {d.cmd}" + (f" <{d.input}>" if d.input else "")


def test_run_file_compares_and_reports_the_first_difference(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    with pytest.raises(AssertionError) as e:
        run_file(path, echo)
    assert "t.txt:3" in str(e.value)
    assert "-out 1" in str(e.value) and "+ran first <input line>" in str(e.value)
    assert path.read_text() == TEXT  # untouched without rewrite


def test_rewrite_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    run_file(path, echo, rewrite=True)
    rewritten = path.read_text()
    assert rewritten == TEXT.replace("out 1\nout 2", "ran first <input line>").replace(
        "third\n----\n", "third\n----\nran third\n"
    )
    run_file(path, echo)  # now it passes
    run_file(path, echo, rewrite=True)
    assert path.read_text() == rewritten  # and rewriting again is a no-op
