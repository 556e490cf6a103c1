"""The ``matches`` patterns: same answers as Python's ``re`` on the subset, linear time, refusals."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from flags.engine.safe_regex import MAX_DFA_STATES, SafeRegex, pattern_problem

from .strategies import examples

Pair = tuple[str, str]  # (our syntax, an equivalent Python pattern)

_atoms: st.SearchStrategy[Pair] = st.sampled_from([
    ("a", "a"), ("b", "b"), ("\\.", "\\."), (".", "[^\\n\\r\\u2028\\u2029]"), ("[ab]", "[ab]"),
    ("[^a]", "[^a]"), ("[a-c]", "[a-c]"), ("\\d", "[0-9]"), ("\\w", "[A-Za-z0-9_]"),
    ("\\n", "\\n"), ("\\u0062", "b"), ("\\x61", "a"), ("[\\d.]", "[0-9.]"),
])


def _quantified(inner: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    quants = st.sampled_from(["*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "+?"])
    return st.builds(lambda p, q: (f"(?:{p[0]}){q}", f"(?:{p[1]}){q}"), inner, quants)


def _sequence(parts: list[Pair]) -> Pair:
    return "".join(p[0] for p in parts), "".join(p[1] for p in parts)


def _alternation(parts: list[Pair]) -> Pair:
    return "(" + "|".join(p[0] for p in parts) + ")", "(" + "|".join(p[1] for p in parts) + ")"


patterns: st.SearchStrategy[Pair] = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        _quantified(inner),
        st.lists(inner, min_size=2, max_size=3).map(_sequence),
        st.lists(inner, min_size=2, max_size=3).map(_alternation),
    ),
    max_leaves=8,
)
anchored = st.builds(
    lambda start, p, end: (("^" if start else "") + p[0] + ("$" if end else ""),
                           ("^" if start else "") + p[1] + ("\\Z" if end else "")),
    st.booleans(), patterns, st.booleans())
subjects = st.text(alphabet="ab.1_\n c", max_size=12)


@examples(400)
@given(anchored, st.lists(subjects, min_size=1, max_size=5))
def test_same_answers_as_python_re(pair: Pair, texts: list[str]) -> None:
    ours, python = pair
    assume(pattern_problem(ours) is None)  # nested unbounded repetitions are refused
    compiled, reference = SafeRegex(ours), re.compile(python)
    for text in texts:
        assert compiled.search(text) == (reference.search(text) is not None), (ours, text)


@pytest.mark.parametrize(("pattern", "text"), [
    ("^(?:a|aa)*$", "a" * 20_000 + "!"),
    ("(?:a|a)*b", "a" * 20_000),
    ("^\\w*\\s?\\w*\\s?\\w*$", "a" * 20_000 + "!"),
    (".*.*.*.*.*.*.*.*=", "x" * 20_000),
])
def test_patterns_that_explode_backtracking_engines_finish(pattern: str, text: str) -> None:
    # A backtracking engine needs exponential or high-polynomial time on these; ours
    # reads each character once (no timing assertion: finishing is the test).
    assert SafeRegex(pattern).search(text) is False


def test_the_dfa_cache_is_bounded() -> None:
    r = SafeRegex("[a-z]{0,30}x[a-z]{0,30}")
    import random
    rng = random.Random(1)
    for _ in range(200):
        r.search("".join(rng.choice("abx") for _ in range(200)))
    assert len(r._states) <= MAX_DFA_STATES


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("(a+)+", "nested repetition"), ("(?:a*)*", "nested repetition"),
    ("(a{1,3})+", "nested repetition"), ("\\1", "backreferences"),
    ("(?=a)", "non-capturing"), ("(?<n>a)", "non-capturing"), ("(?i)a", "non-capturing"),
    ("\\b", "word boundaries"), ("[]", "empty classes"), ("[^]", "empty classes"),
    ("a**", "nothing to repeat"), ("*a", "nothing to repeat"), ("^*", "nothing to repeat"),
    ("a{", "'{' must be escaped"), ("a{,3}", "'{' must be escaped"), ("}", "'}' must be escaped"),
    ("]", "']' must be escaped"), ("[[]", "'[' must be escaped"), ("a{3,1}", "out of order"),
    ("a{1001}", "at most 1000"), ("(a", "missing ')'"), ("a)", "unbalanced"), ("[a", "missing ']'"),
    ("\\", "lone"), ("\\q", "unknown escape"), ("\\-", "unknown escape"), ("[z-a]", "out of order"),
    ("[\\d-z]", "class escape"), ("\\x4", "2 hex digits"), ("\\u12", "4 hex digits"),
    ("\\01", "octal"), ("[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}"
                         "[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}",
                         "too complex"),
])
def test_unsupported_patterns_are_refused_with_a_reason(pattern: str, fragment: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and fragment in problem, problem
    assert problem.startswith("at position ") or "too complex" in problem


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("^beta-", ["beta-1"], ["xbeta-"]),
    ("\\.com$", ["a.com"], ["a.com\n", "acom"]),
    ("^exact$", ["exact"], ["exact\n", "exactly"]),
    ("needle", ["haystack needle"], ["needl"]),
    ("[-a]", ["-"], ["b"]), ("[a-]", ["-"], ["b"]), ("[\\-]", ["-"], ["a"]),
    ("\\s", ["\u3000", "\ufeff", "\u2028"], ["x"]), ("\\S", ["x"], [" ", ""]),
    ("[\\s\\d]", [" ", "5"], ["x"]), ("[^\\d]", ["x"], ["5"]), ("\\W", ["-"], ["a"]),
    ("\\D", ["a"], ["1"]), ("\\t\\r\\f\\v\\0", ["\t\r\f\v\0"], ["t"]),
    ("$", ["", "abc"], []), ("^$", [""], ["a", "\n"]), ("a|", ["", "b"], []),
    ("\\/", ["/"], ["a"]), ("😀+", ["😀😀"], ["x"]),
])
def test_examples(pattern: str, yes: list[str], no: list[str]) -> None:
    r = SafeRegex(pattern)
    for text in yes:
        assert r.search(text), text
    for text in no:
        assert not r.search(text), text
