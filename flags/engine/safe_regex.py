"""The ``matches`` operator's regular expressions: a portable subset, matched in linear time.

Patterns come from flag editors and subjects from applications' contexts, so a
backtracking engine (Python's ``re``, JavaScript's ``RegExp``) could be made to run
for minutes by one bad pattern. This module parses a documented subset of
ECMAScript/Python syntax into a Thompson NFA and runs it as a lazily built DFA:
time linear in the subject, memory bounded, whatever the pattern.

Syntax (anything else is refused with a message):

- literals; ``.`` (any character but ``\\n \\r \\u2028 \\u2029``); ``^`` and ``$``
  (start and end of the whole subject only);
- classes ``[abc] [^a-z0-9_]``; escapes ``\\d \\D \\w \\W \\s \\S`` (ASCII digits, ASCII
  word characters, JavaScript's whitespace set), ``\\t \\n \\r \\f \\v \\0``,
  ``\\xHH``, ``\\uHHHH``, and ``\\`` before any of ``^$\\.*+?()[]{}|/`` (and ``-`` in a class);
- groups ``(...)`` and ``(?:...)`` (groups capture nothing: only a yes/no answer is
  needed); alternation ``|``; quantifiers ``* + ? {n} {n,} {n,m}`` (n, m ≤ 1000),
  optionally lazy (``*?``; the answer is the same).

Not supported: backreferences, lookarounds, ``\\b``, named groups, inline flags,
case-insensitive matching (write ``[Aa]``). Literal ``{ } ]`` must be escaped, and
so must ``[`` inside a class. A repeated group may not contain a repetition when
either of them is unbounded (``(a+)+``, ``(a{1,3})*``), so that SDKs using a
backtracking engine for the same patterns stay safe too.

Semantics are a *search*: the pattern may match anywhere in the subject, as
``re.search`` and ``RegExp.prototype.test`` (with the ``u`` flag) do.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_REPEAT = 1000
MAX_NFA_NODES = 10_000
MAX_DFA_STATES = 2_000
MAX_CACHED_TRANSITIONS = 512

_MAX_CODE_POINT = 0x10FFFF
_DIGIT = ((0x30, 0x39),)
_WORD = ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A))
_SPACE = (
    (0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
    (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF),
)
_LINE_TERMINATORS = ((0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
_SYNTAX = set("^$\\.*+?()[]{}|/")
_CONTROL_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B}
_CLASS_ESCAPES = {"d": (_DIGIT, False), "D": (_DIGIT, True), "w": (_WORD, False),
                  "W": (_WORD, True), "s": (_SPACE, False), "S": (_SPACE, True)}

Ranges = tuple[tuple[int, int], ...]


class RegexError(ValueError):
    """A pattern outside the supported subset, with the position and the reason."""


# ------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class _Set:
    ranges: Ranges
    negated: bool


@dataclass(frozen=True, slots=True)
class _Cat:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alt:
    branches: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    body: _Node
    lo: int
    hi: int | None


@dataclass(frozen=True, slots=True)
class _Anchor:
    start: bool


_Node = _Set | _Cat | _Alt | _Repeat | _Anchor


def _normalize(ranges: list[tuple[int, int]]) -> Ranges:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    nxt = 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= _MAX_CODE_POINT:
        out.append((nxt, _MAX_CODE_POINT))
    return tuple(out)


def _max_repeat(node: _Node) -> tuple[bool, bool]:
    """(contains a repetition allowing more than one, contains an unbounded one)."""
    if isinstance(node, _Repeat):
        many, unbounded = _max_repeat(node.body)
        return (many or node.hi is None or node.hi > 1, unbounded or node.hi is None)
    if isinstance(node, _Cat | _Alt):
        parts = node.items if isinstance(node, _Cat) else node.branches
        many = unbounded = False
        for part in parts:
            m, u = _max_repeat(part)
            many, unbounded = many or m, unbounded or u
        return many, unbounded
    return False, False


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, message: str, at: int | None = None) -> RegexError:
        return RegexError(f"at position {self.i if at is None else at}: {message}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def parse(self) -> _Node:
        node = self.alternation()
        if self.i < len(self.p):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> _Node:
        branches = [self.concatenation()]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concatenation())
        return branches[0] if len(branches) == 1 else _Alt(tuple(branches))

    def concatenation(self) -> _Node:
        items: list[_Node] = []
        while (c := self.peek()) is not None and c not in "|)":
            items.append(self.repetition())
        return items[0] if len(items) == 1 else _Cat(tuple(items))

    def repetition(self) -> _Node:
        start = self.i
        atom = self.atom()
        quant = self.quantifier()
        if quant is None:
            return atom
        if isinstance(atom, _Anchor):
            raise self.fail("nothing to repeat", start)
        lo, hi = quant
        if self.peek() == "?":
            self.i += 1
        if self.peek() in ("*", "+", "?", "{"):
            raise self.fail("nothing to repeat")
        many, unbounded = _max_repeat(atom)
        if many and (hi is None or hi > 1) and (unbounded or hi is None):
            raise self.fail(
                "nested repetition: a repeated group may not contain a repetition "
                "when either is unbounded", start)
        return _Repeat(atom, lo, hi)

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c == "*":
            self.i += 1
            return 0, None
        if c == "+":
            self.i += 1
            return 1, None
        if c == "?":
            self.i += 1
            return 0, 1
        if c != "{":
            return None
        start = self.i
        end = self.p.find("}", start)
        body = self.p[start + 1:end] if end != -1 else ""
        lo_s, comma, hi_s = body.partition(",")
        if end == -1 or not lo_s.isascii() or not lo_s.isdigit() or (
            hi_s and (not hi_s.isascii() or not hi_s.isdigit())
        ):
            raise self.fail("'{' must be escaped as '\\{' when it is not a quantifier {n,m}")
        lo = int(lo_s)
        hi = lo if not comma else (int(hi_s) if hi_s else None)
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise self.fail(f"repetition counts may be at most {MAX_REPEAT}")
        if hi is not None and hi < lo:
            raise self.fail("numbers out of order in {n,m} quantifier")
        self.i = end + 1
        return lo, hi

    def atom(self) -> _Node:
        c = self.p[self.i]
        if c == "(":
            start = self.i
            self.i += 1
            if self.peek() == "?":
                if self.p.startswith("?:", self.i):
                    self.i += 2
                else:
                    raise self.fail(
                        "only plain (...) and non-capturing (?:...) groups are supported; "
                        "not lookarounds, named groups or inline flags", start)
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("missing ')'", start)
            self.i += 1
            return node
        if c == "[":
            return self.char_class()
        self.i += 1
        if c == ".":
            return _Set(_LINE_TERMINATORS, True)
        if c == "^":
            return _Anchor(True)
        if c == "$":
            return _Anchor(False)
        if c == "\\":
            return self.escape(in_class=False)
        if c in "*+?":
            raise self.fail("nothing to repeat", self.i - 1)
        if c in "{}]":
            raise self.fail(f"'{c}' must be escaped as '\\{c}'", self.i - 1)
        return _Set(((ord(c), ord(c)),), False)

    def escape(self, in_class: bool) -> _Set:
        """The character or class after a backslash (``self.i`` is just past the backslash)."""
        start = self.i - 1
        if self.i >= len(self.p):
            raise self.fail("pattern ends with a lone '\\'", start)
        c = self.p[self.i]
        self.i += 1
        if c in _CLASS_ESCAPES:
            ranges, negated = _CLASS_ESCAPES[c]
            return _Set(ranges, negated)
        if c in _CONTROL_ESCAPES:
            cp = _CONTROL_ESCAPES[c]
        elif c == "0":
            if self.peek() is not None and self.p[self.i].isdigit():
                raise self.fail("backreferences and octal escapes are not supported", start)
            cp = 0
        elif c in "xu":
            width = 2 if c == "x" else 4
            digits = self.p[self.i:self.i + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"\\{c} must be followed by {width} hex digits", start)
            self.i += width
            cp = int(digits, 16)
        elif c in _SYNTAX or (in_class and c == "-"):
            cp = ord(c)
        elif c in "bB":
            raise self.fail("word boundaries (\\b, \\B) are not supported", start)
        elif c.isdigit():
            raise self.fail("backreferences are not supported", start)
        else:
            raise self.fail(f"unknown escape '\\{c}'", start)
        return _Set(((cp, cp),), False)

    def char_class(self) -> _Set:
        start = self.i
        self.i += 1
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        if self.peek() == "]":
            raise self.fail("empty classes [] and [^] are not supported", start)
        ranges: list[tuple[int, int]] = []
        while True:
            if self.i >= len(self.p):
                raise self.fail("missing ']'", start)
            if self.p[self.i] == "]":
                self.i += 1
                break
            lo = self.class_atom()
            if self.peek() == "-" and self.p[self.i + 1:self.i + 2] not in ("]", ""):
                dash = self.i
                self.i += 1
                hi = self.class_atom()
                if lo.negated or len(lo.ranges) != 1 or lo.ranges[0][0] != lo.ranges[0][1] \
                        or hi.negated or len(hi.ranges) != 1 or hi.ranges[0][0] != hi.ranges[0][1]:
                    raise self.fail("a class escape cannot be the end of a range", dash)
                if hi.ranges[0][0] < lo.ranges[0][0]:
                    raise self.fail("range out of order in character class", dash)
                ranges.append((lo.ranges[0][0], hi.ranges[0][0]))
            else:
                ranges.extend(_complement(lo.ranges) if lo.negated else lo.ranges)
        return _Set(_normalize(ranges), negated)

    def class_atom(self) -> _Set:
        c = self.p[self.i]
        self.i += 1
        if c == "\\":
            return self.escape(in_class=True)
        if c == "[":
            raise self.fail("'[' must be escaped as '\\[' inside a class", self.i - 1)
        return _Set(((ord(c), ord(c)),), False)


# ------------------------------------------------------------------------------ the NFA

_CHAR, _SPLIT, _BOL, _EOL, _MATCH = range(5)


@dataclass(slots=True)
class _NFA:
    kinds: list[int] = field(default_factory=list)
    outs: list[int] = field(default_factory=list)
    alts: list[int] = field(default_factory=list)
    sets: list[tuple[tuple[int, ...], tuple[int, ...], bool]] = field(default_factory=list)

    def add(self, kind: int, out: int = -1, alt: int = -1,
            char_set: _Set | None = None) -> int:
        if len(self.kinds) >= MAX_NFA_NODES:
            raise RegexError("pattern is too complex (too many states once repetitions are expanded)")
        self.kinds.append(kind)
        self.outs.append(out)
        self.alts.append(alt)
        self.sets.append(((), (), False) if char_set is None else (
            tuple(lo for lo, _ in char_set.ranges), tuple(hi for _, hi in char_set.ranges),
            char_set.negated))
        return len(self.kinds) - 1

    def build(self, node: _Node, nxt: int) -> int:
        """The entry of a fragment matching ``node`` and then continuing at ``nxt``."""
        if isinstance(node, _Set):
            return self.add(_CHAR, nxt, char_set=node)
        if isinstance(node, _Anchor):
            return self.add(_BOL if node.start else _EOL, nxt)
        if isinstance(node, _Cat):
            for item in reversed(node.items):
                nxt = self.build(item, nxt)
            return nxt
        if isinstance(node, _Alt):
            entries = [self.build(b, nxt) for b in node.branches]
            entry = entries[-1]
            for e in reversed(entries[:-1]):
                entry = self.add(_SPLIT, e, entry)
            return entry
        entry = nxt
        if node.hi is None:
            loop = self.add(_SPLIT, -1, nxt)
            self.outs[loop] = self.build(node.body, loop)
            entry = loop
        else:
            for _ in range(node.hi - node.lo):
                entry = self.add(_SPLIT, self.build(node.body, entry), nxt)
        for _ in range(node.lo):
            entry = self.build(node.body, entry)
        return entry


class _DState:
    """A DFA state: the set of NFA nodes alive after some prefix, and its cached moves."""

    __slots__ = ("accepting", "end_accepting", "next", "nodes")

    def __init__(self, nodes: frozenset[int], accepting: bool) -> None:
        self.nodes = nodes
        self.accepting = accepting
        self.end_accepting: bool | None = None
        self.next: dict[str, _DState] = {}


def _literal(node: _Node) -> tuple[bool, str, bool] | None:
    """``(anchored at start, text, anchored at end)`` when the pattern is a plain literal."""
    items = list(node.items) if isinstance(node, _Cat) else [node]
    start = bool(items) and isinstance(items[0], _Anchor) and items[0].start
    if start:
        items = items[1:]
    end = bool(items) and isinstance(items[-1], _Anchor) and not items[-1].start
    if end:
        items = items[:-1]
    chars: list[str] = []
    for item in items:
        if not isinstance(item, _Set) or item.negated or len(item.ranges) != 1 \
                or item.ranges[0][0] != item.ranges[0][1]:
            return None
        chars.append(chr(item.ranges[0][0]))
    return start, "".join(chars), end


class SafeRegex:
    """A compiled ``matches`` pattern; ``search(subject)`` runs in time linear in the subject.

    Plain literals (``^beta-``, ``@example\\.com$``) are answered with string methods.
    """

    __slots__ = ("_init", "_nfa", "_start", "_start_mid", "_states", "pattern", "search")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        tree = _Parser(pattern).parse()
        literal = _literal(tree)
        if literal is not None:
            at_start, text, at_end = literal
            if at_start and at_end:
                self.search = text.__eq__
            elif at_start:
                self.search = lambda subject: subject.startswith(text)
            elif at_end:
                self.search = lambda subject: subject.endswith(text)
            else:
                self.search = lambda subject: text in subject
        else:
            self.search = self._search
        nfa = _NFA()
        match = nfa.add(_MATCH)
        self._nfa = nfa
        self._start = nfa.build(tree, match)
        self._start_mid = self._closure((self._start,), at_start=False, at_end=False)
        self._states: dict[frozenset[int], _DState] = {}
        self._init = self._intern(self._closure((self._start,), at_start=True, at_end=False))

    def _closure(self, seeds: tuple[int, ...] | frozenset[int] | set[int],
                 at_start: bool, at_end: bool) -> frozenset[int]:
        kinds, outs, alts = self._nfa.kinds, self._nfa.outs, self._nfa.alts
        live: set[int] = set()
        seen: set[int] = set()
        stack = list(seeds)
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            kind = kinds[n]
            if kind == _SPLIT:
                stack.append(alts[n])
                stack.append(outs[n])
            elif kind == _BOL:
                if at_start:
                    stack.append(outs[n])
            elif kind == _EOL:
                if at_end:
                    stack.append(outs[n])
                else:
                    live.add(n)
            else:
                live.add(n)
        return frozenset(live)

    def _intern(self, nodes: frozenset[int]) -> _DState:
        state = self._states.get(nodes)
        if state is None:
            if len(self._states) >= MAX_DFA_STATES:
                self._states = {}
            state = _DState(nodes, any(self._nfa.kinds[n] == _MATCH for n in nodes))
            self._states[nodes] = state
        return state

    def _step(self, state: _DState, ch: str) -> _DState:
        cp = ord(ch)
        kinds, outs, sets = self._nfa.kinds, self._nfa.outs, self._nfa.sets
        targets: set[int] = set()
        for n in state.nodes:
            if kinds[n] == _CHAR:
                starts, ends, negated = sets[n]
                i = bisect_right(starts, cp) - 1
                if (i >= 0 and cp <= ends[i]) != negated:
                    targets.add(outs[n])
        nodes = self._closure(targets, at_start=False, at_end=False) | self._start_mid
        nxt = self._intern(nodes)
        if len(state.next) < MAX_CACHED_TRANSITIONS:
            state.next[ch] = nxt
        return nxt

    def _accepts_at_end(self, state: _DState, at_start: bool) -> bool:
        if at_start:
            nodes = self._closure(state.nodes, at_start=True, at_end=True)
            return any(self._nfa.kinds[n] == _MATCH for n in nodes)
        if state.end_accepting is None:
            nodes = self._closure(state.nodes, at_start=False, at_end=True)
            state.end_accepting = any(self._nfa.kinds[n] == _MATCH for n in nodes)
        return state.end_accepting

    search: Callable[[str], bool]
    """Whether the pattern matches somewhere in the subject."""

    def _search(self, subject: str) -> bool:
        """Whether the pattern matches somewhere in ``subject`` (run as a lazy DFA)."""
        state = self._init
        if state.accepting:
            return True
        for ch in subject:
            nxt = state.next.get(ch)
            if nxt is None:
                nxt = self._step(state, ch)
            if nxt.accepting:
                return True
            if not nxt.nodes:
                return False
            state = nxt
        return self._accepts_at_end(state, at_start=not subject)


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a supported ``matches`` pattern, or ``None`` if it is."""
    try:
        SafeRegex(pattern)
    except RegexError as e:
        return str(e)
    return None
