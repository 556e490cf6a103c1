"""Bucketing: the portable hash, the bucket → variation mapping, monotonicity, distribution."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.engine import WEIGHT_SCALE, compile_flag
from flags.engine.bucketing import (
    HASH_SCALE,
    bucket,
    bucketing_value,
    entry_for_bucket,
    hash_point,
    make_selector,
    thresholds,
)

from .strategies import examples

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "bucketing.json"


def reference_bucket(text: str) -> int:
    """LaunchDarkly's recipe, written as plainly as possible (hex digits, integer maths)."""
    h = int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)
    return min(h * 100_000 // 0xFFFFFFFFFFFFFFF, 99_999)


# Computed outside Python: printf '%s' TEXT | sha1sum | cut -c1-15, then with bc:
# ibase=16; H * 186A0 / FFFFFFFFFFFFFFF   (186A0 = 100000).
HAND_CHECKED = [
    ("new-checkout", "c0ffee", None, "user-1", "e7b354210fda01b", 90508),
    ("new-checkout", "c0ffee", None, "user-2", "afc66978046f3d2", 68662),
    ("search-ranking", "a7c2", None, "org-42", "21c42b7c77f3ea5", 13189),
    ("any-flag", "any-salt", 42, "user-1", "bdc129a287aeb51", 74122),
    ("new-checkout", "", None, "alice", "cf47bc9f7cc619a", 80968),
    ("beta", "salt", None, "déjà-vu", "7833c6d6efc023c", 46954),
]


@pytest.mark.parametrize(("flag", "salt", "seed", "value", "hex15", "expected"), HAND_CHECKED)
def test_hand_checked_buckets(flag: str, salt: str, seed: int | None, value: str, hex15: str,
                              expected: int) -> None:
    text = f"{seed}.{value}" if seed is not None else f"{flag}.{salt}.{value}"
    assert hash_point(f"{seed}." if seed is not None else f"{flag}.{salt}.", value) == int(hex15, 16)
    assert reference_bucket(text) == expected
    assert bucket(flag, salt, value, seed) == expected


def test_the_shared_bucketing_vectors() -> None:
    data = json.loads(VECTORS.read_text())
    assert len(data["cases"]) >= 20
    for case in data["cases"]:
        seed = case.get("seed")
        assert bucket(case["flag_key"], case["salt"], case["value"], seed) == case["bucket"], case
        prefix = f"{seed}." if seed is not None else f"{case['flag_key']}.{case['salt']}."
        assert hash_point(prefix, case["value"]) == int(case["h"], 16), case


@examples(150)
@given(st.text(max_size=20), st.text(max_size=10), st.text(max_size=20))
def test_bucket_matches_the_plain_reference(flag: str, salt: str, value: str) -> None:
    assert bucket(flag, salt, value) == reference_bucket(f"{flag}.{salt}.{value}")


def test_the_extremes_of_h() -> None:
    assert (0 * WEIGHT_SCALE) // HASH_SCALE == 0
    # h = HASH_SCALE would give bucket 100000; it counts as 99999, in the last entry.
    weights = [99_999, 1]
    assert entry_for_bucket(weights, 99_999) == 1
    bounds = thresholds(weights)
    assert bounds[-1] > HASH_SCALE
    assert bounds[-1] > HASH_SCALE and bounds[0] <= HASH_SCALE


@examples(200)
@given(st.lists(st.integers(0, WEIGHT_SCALE), min_size=0, max_size=4),
       st.integers(0, HASH_SCALE))
def test_thresholds_decide_exactly_as_buckets_do(cuts: list[int], h: int) -> None:
    points = sorted(cuts)
    weights = [b - a for a, b in zip([0, *points], [*points, WEIGHT_SCALE], strict=True)]
    b = min(h * WEIGHT_SCALE // HASH_SCALE, WEIGHT_SCALE - 1)
    import bisect
    assert bisect.bisect_right(thresholds(weights), h) == entry_for_bucket(weights, b)
    # The compiled bucketer compares 64-bit prefixes against thresholds << 4.
    for low in (0, 15):
        assert bisect.bisect_right([t << 4 for t in thresholds(weights)], (h << 4) | low) \
            == entry_for_bucket(weights, b)


@examples(200)
@given(st.lists(st.integers(0, WEIGHT_SCALE), min_size=0, max_size=3), st.text(max_size=12))
def test_compiled_bucketer_agrees_with_bucket(cuts: list[int], key: str) -> None:
    points = sorted(cuts)
    weights = [b - a for a, b in zip([0, *points], [*points, WEIGHT_SCALE], strict=True)]
    pick = make_selector("f.s.", weights, None, range(len(weights)))
    assert pick({}, key, None) == entry_for_bucket(weights, bucket("f", "s", key))
    by_attr = make_selector("f.s.", weights, lambda ctx: ctx.get("org"), range(len(weights)))
    assert by_attr({"org": key}, "ignored", None) == entry_for_bucket(weights, bucket("f", "s", key))


def _rollout_flag(first_weight: int, key: str = "rollout", salt: str = "s1",
                  **rollout: Any) -> dict[str, Any]:
    return {"key": key, "kind": "boolean", "variations": [True, False], "on": True,
            "salt": salt,
            "fallthrough": {"rollout": {"variations": [
                {"variation": 0, "weight": first_weight},
                {"variation": 1, "weight": WEIGHT_SCALE - first_weight}], **rollout}}}


@examples(200)
@given(st.integers(0, WEIGHT_SCALE), st.integers(0, WEIGHT_SCALE),
       st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=30))
def test_raising_a_rollout_never_moves_anyone_out(w1: int, w2: int, keys: list[str]) -> None:
    low, high = sorted((w1, w2))
    before, after = compile_flag(_rollout_flag(low)), compile_flag(_rollout_flag(high))
    for key in keys:
        if before.evaluate({"key": key}).value is True:
            assert after.evaluate({"key": key}).value is True


def test_raising_a_rollout_step_by_step_only_adds_contexts() -> None:
    keys = [f"user-{i}" for i in range(2000)]
    previous: set[str] = set()
    for percent in range(0, 101, 5):
        flag = compile_flag(_rollout_flag(percent * 1000))
        now = {k for k in keys if flag.evaluate({"key": k}).value is True}
        assert previous <= now
        previous = now
    assert previous == set(keys)


def test_distribution_over_100k_keys_is_within_tolerance() -> None:
    # Three-way split 20% / 30% / 50%. With n = 100000 the standard deviation of a share
    # is at most 0.16 percentage points; allow 0.8 (five of them).
    doc = {"key": "split", "kind": "string", "variations": ["a", "b", "c"], "on": True,
           "salt": "9f8e",
           "fallthrough": {"rollout": {"variations": [
               {"variation": 0, "weight": 20_000}, {"variation": 1, "weight": 30_000},
               {"variation": 2, "weight": 50_000}]}}}
    flag = compile_flag(doc)
    counts = Counter(flag.evaluate({"key": f"k{i}"}).value for i in range(100_000))
    for value, share in (("a", 0.20), ("b", 0.30), ("c", 0.50)):
        assert abs(counts[value] / 100_000 - share) < 0.008, counts


def test_the_finest_weight_is_0_001_percent() -> None:
    flag = compile_flag(_rollout_flag(1))
    hits = sum(flag.evaluate({"key": f"k{i}"}).value is True for i in range(200_000))
    assert 0 < hits < 10  # about 2 expected


def test_assignments_are_independent_across_flags() -> None:
    # Two 50% rollouts with different keys/salts: about 25% of contexts are in both.
    a = compile_flag(_rollout_flag(50_000, key="flag-a", salt="x"))
    b = compile_flag(_rollout_flag(50_000, key="flag-b", salt="y"))
    same_key_other_salt = compile_flag(_rollout_flag(50_000, key="flag-a", salt="z"))
    n = 40_000
    both = sum(a.evaluate({"key": f"u{i}"}).value is True and
               b.evaluate({"key": f"u{i}"}).value is True for i in range(n))
    assert abs(both / n - 0.25) < 0.015
    resalted = sum(a.evaluate({"key": f"u{i}"}).value is True and
                   same_key_other_salt.evaluate({"key": f"u{i}"}).value is True for i in range(n))
    assert abs(resalted / n - 0.25) < 0.015


def test_a_seed_replaces_flag_key_and_salt() -> None:
    a = compile_flag(_rollout_flag(50_000, key="flag-a", salt="x", seed=7))
    b = compile_flag(_rollout_flag(50_000, key="flag-b", salt="y", seed=7))
    for i in range(500):
        assert a.evaluate({"key": f"u{i}"}).value == b.evaluate({"key": f"u{i}"}).value


def test_bucket_by_attribute_and_fallback_to_key() -> None:
    flag = compile_flag(_rollout_flag(50_000, bucket_by="org"))
    by_org = {flag.evaluate({"key": f"u{i}", "org": "acme"}).value for i in range(200)}
    assert len(by_org) == 1  # everyone in one org gets the same variation
    same = compile_flag(_rollout_flag(50_000))
    for i in range(200):
        ctx = {"key": f"u{i}"}
        assert flag.evaluate(ctx).value == same.evaluate(ctx).value  # no org: by key
        ctx_bad = {"key": f"u{i}", "org": {"id": 1}}
        assert flag.evaluate(ctx_bad).value == same.evaluate(ctx).value


@pytest.mark.parametrize(("value", "text"), [
    ("abc", "abc"), ("", ""), (42, "42"), (-7, "-7"), (42.0, "42"), (2**53 - 1, str(2**53 - 1)),
    (2**53, None), (1.5, None), (True, None), (None, None), ([1], None), ({"a": 1}, None),
    (float("nan"), None), (float("inf"), None),
])
def test_bucketing_values(value: object, text: str | None) -> None:
    assert bucketing_value(value) == text


def test_lone_surrogates_hash_as_replacement_characters() -> None:
    assert bucket("f", "s", "a\ud800b") == bucket("f", "s", "a\ufffdb")
    flag = compile_flag(_rollout_flag(50_000))
    assert flag.evaluate({"key": "a\ud800b"}).value == flag.evaluate({"key": "a\ufffdb"}).value
