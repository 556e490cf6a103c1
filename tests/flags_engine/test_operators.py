"""The pieces operators rely on: semantic versions, instants, attribute references."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.engine.attributes import attribute_path, attribute_problem, make_getter
from flags.engine.instants import days_from_civil, parse_timestamp, to_epoch_millis
from flags.engine.semver import parse_semver, semver_key

from .strategies import examples


def test_semver_precedence_follows_semver_org() -> None:
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0"]
    keys = [semver_key(v) for v in order]
    assert all(k is not None for k in keys)
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(("text", "parts"), [
    ("1.2.3", (1, 2, 3, ())), ("1", (1, 0, 0, ())), ("1.2", (1, 2, 0, ())),
    ("1.2-beta.1", (1, 2, 0, ("beta", 1))), ("1.2.3+build", (1, 2, 3, ())),
    ("0.0.0-0", (0, 0, 0, (0,))), ("1.0.0-x-y-z.--", (1, 0, 0, ("x-y-z", "--"))),
    ("1.0.0-0a", (1, 0, 0, ("0a",))),
])
def test_semver_parsing(text: str, parts: tuple[object, ...]) -> None:
    assert tuple(parse_semver(text) or ()) == parts


@pytest.mark.parametrize("text", [
    "", "v1.2.3", "1.2.3.4", "01.2.3", "1.02.3", "1.2.3-01", "1.2.3-", "1.2.3+", "1..2",
    "1.2.3-beta..1", " 1.2.3", "1.2.3 ", "\u0661.\u0662.\u0663", "1.2.3\n", "x" * 300, "1.2.3-é",
])
def test_semver_refusals(text: str) -> None:
    assert parse_semver(text) is None and semver_key(text) is None


def test_semver_of_non_strings() -> None:
    for value in (1, 1.5, None, True, ["1.0.0"]):
        assert semver_key(value) is None


@examples(200)
@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30),
                    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                                               dt.timezone(dt.timedelta(hours=-8))])))
def test_timestamps_agree_with_datetime(moment: dt.datetime) -> None:
    text = moment.isoformat(timespec="milliseconds")
    expected = (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    assert parse_timestamp(text) == expected


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_days_from_civil_agrees_with_date(day: dt.date) -> None:
    assert days_from_civil(day.year, day.month, day.day) == (day - dt.date(1970, 1, 1)).days


@pytest.mark.parametrize(("text", "millis"), [
    ("1970-01-01", 0), ("1970-01-01T00:00:00Z", 0), ("1970-01-01T00:00:00.999999Z", 999),
    ("1970-01-01T01:00:00+01:00", 0), ("1969-12-31T23:59:59.5Z", -500),
    ("2024-02-29T00:00:00Z", 1709164800000), ("2024-05-01T12:00:00Z", 1714564800000),
])
def test_timestamps(text: str, millis: int) -> None:
    assert parse_timestamp(text) == millis


@pytest.mark.parametrize("text", [
    "2024-05-01T12:00:00", "2024-5-1", "2023-02-29", "2024-04-31", "2024-00-10",
    "2024-05-01T24:00:00Z", "2024-05-01T12:60:00Z", "2024-05-01T12:00:60Z",
    "2024-05-01T12:00:00+24:00", "2024-05-01T12:00:00+05", "2024-05-01 12:00:00Z",
    "20240501", "2024-05-01T12:00Z", "2024-05-01T12:00:00.Z", "\u0662\u0660\u0662\u0664-05-01",
])
def test_timestamp_refusals(text: str) -> None:
    assert parse_timestamp(text) is None


@pytest.mark.parametrize(("value", "millis"), [
    (5, 5.0), (-1.5, -1.5), (True, None), (float("nan"), None), (float("inf"), None),
    (10**400, None), (None, None), ([0], None), ("1970-01-01", 0.0),
])
def test_epoch_millis(value: object, millis: float | None) -> None:
    assert to_epoch_millis(value) == millis


@pytest.mark.parametrize(("ref", "path"), [
    ("email", ("email",)), ("a.b", ("a.b",)), ("/a/b", ("a", "b")), ("/a~1b/c~0d", ("a/b", "c~d")),
    ("/a", ("a",)), ("~", ("~",)), ("/~01", ("~1",)),
    ("", None), ("/", None), ("/a/", None), ("//a", None), ("/a~", None), ("/a~2", None),
])
def test_attribute_paths(ref: str, path: tuple[str, ...] | None) -> None:
    assert attribute_path(ref) == path
    assert (attribute_problem(ref) is None) == (path is not None)


def test_attribute_getters() -> None:
    ctx = {"key": "k", "a": {"b": {"c": 1}}, "x.y": 2, "list": [{"b": 3}]}
    assert make_getter("/a/b/c")(ctx) == 1
    assert make_getter("x.y")(ctx) == 2
    assert make_getter("/a/missing/c")(ctx) is None
    assert make_getter("/list/b")(ctx) is None
    assert make_getter("kind")(ctx) == "user"
    assert make_getter("/kind")(ctx) == "user"
    assert make_getter("kind")({"kind": "org"}) == "org"
    assert attribute_problem(5) == "must be a string"
    assert attribute_problem("a\nb") is not None
    with pytest.raises(ValueError):
        make_getter("/")
