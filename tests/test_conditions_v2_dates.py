"""Version 2 "dates" of the condition language (issue 17): program-local dates, `days_since`,
`days_to_anniversary`, `version(...)`, `channels`, `exists(...) = false`.

Properties: the in-memory evaluator, its closures (what the engine runs) and the compiled SQL agree
on generated conditions and histories in timezones with offsets and DST (on SQLite and PostgreSQL);
truth is constant until `horizon.next_change` and differs there; rules and trees round-trip.
Explicit examples pin the spec's meaning (the Istanbul 01:30 login, 29 February, "10.2" > "5.0").
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from domain.db.engine import Database, create_engine
from domain.errors import InvalidInput
from domain.segments.closures import Context, compile_condition
from domain.segments.compile import Compilation
from domain.segments.conditions import (
    All,
    DateCompare,
    DateFn,
    Node,
    Not,
    Op,
    VersionCompare,
    condition_to_json,
    parse_condition,
)
from domain.segments.evaluate import Evaluation, date_of, days_to_anniversary, version_key
from domain.segments.facts import Needs, load_facts
from domain.segments.horizon import LIMIT, is_time_dependent, next_change
from domain.segments.lifecycle import LifecycleThresholds
from domain.segments.rules import parse_rule, render_rule
from domain.settings import Settings
from tests.support import local_dates
from tests.support.local_dates import DAY, US, EventSpec, History, MemberSpec, member_facts
from tests.support.strategies import v2_dates_leaves

EXAMPLES = int(os.environ.get("EQUIVALENCE_EXAMPLES", "150"))
FLIPS = int(os.environ.get("HORIZON_EXAMPLES", "600"))


# ---------- harness (sync: hypothesis cannot re-enter pytest-asyncio's loop) ----------


class Harness:
    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(database_url)
        self.db = Database(self.engine)

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def harness(settings: Settings) -> Iterator[Harness]:
    opened = Harness(settings.database_url)
    yield opened
    opened.close()


def evaluate_all(harness: Harness, history: History, condition: dict[str, Any]) -> dict[str, list[bool]]:
    """Per evaluator, per member of the history in order: whether the condition holds."""
    node = parse_condition(condition)
    zone = ZoneInfo(history.zone)

    async def run() -> dict[str, list[bool]]:
        program_id, member_ids = await local_dates.write_history(harness.db, history)
        async with harness.db.read() as session:
            facts = await load_facts(session, program_id, member_ids, Needs.of([node], zone), history.now)
            evaluation = Evaluation(history.now, zone=zone)
            check = compile_condition(node)
            compilation = Compilation(session.get_bind().dialect.name, program_id, history.now, {}, zone=zone)
            selected = {
                cast(int, m) for m in (await session.execute(compilation.members_where(node))).scalars()
            }
        return {
            "memory": [evaluation.holds(node, facts[m]) for m in member_ids],
            "closures": [check(Context(facts[m], evaluation)) for m in member_ids],
            "sql": [m in selected for m in member_ids],
        }

    return harness.loop.run_until_complete(run())


def holds(harness: Harness, history: History, condition: dict[str, Any]) -> list[bool]:
    found = evaluate_all(harness, history, condition)
    assert found["memory"] == found["closures"] == found["sql"], (condition, found)
    return found["memory"]


# ---------- the equivalence property ----------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=EXAMPLES, deadline=None)
@given(history=local_dates.histories(), condition=local_dates.CONDITIONS)
def test_evaluators_agree_in_local_dates(
    harness: Harness, history: History, condition: dict[str, Any]
) -> None:
    found = evaluate_all(harness, history, condition)

    memory = found["memory"]
    event("holds for " + ("no member" if not any(memory) else "every member" if all(memory) else "some"))
    assert found["memory"] == found["closures"] == found["sql"], condition


# ---------- the time-flip property (pure) ----------


def truth(condition: Node, member: Any, at: datetime, zone: ZoneInfo) -> bool:
    return Evaluation(at, LifecycleThresholds(), zone).holds(condition, member)


@settings(max_examples=FLIPS, deadline=None)
@given(
    history=local_dates.histories(max_members=1, zones=local_dates.FLIP_ZONES),
    condition=local_dates.TIMED_CONDITIONS.map(parse_condition),
    fractions=st.lists(st.floats(0, 1), min_size=1, max_size=6),
)
@example(  # the flip 8 years ahead that only six anniversaries missed (see LEAP_DAY_AT_34)
    history=History(
        "Pacific/Chatham",
        datetime(2026, 6, 15, tzinfo=UTC),
        (MemberSpec(datetime(2025, 1, 1, tzinfo=UTC), {"birthDate": "2000-02-29"}, [], ()),),
    ),
    condition=parse_condition(
        {
            "all": [
                {"attr": "age", "op": "gte", "value": 34},
                {"date": "birthDate", "fn": "days_to_anniversary", "op": "ne", "value": 0},
            ]
        }
    ),
    fractions=[0.5],
)
def test_truth_is_constant_until_the_next_local_change(
    history: History, condition: Node, fractions: list[float]
) -> None:
    zone = ZoneInfo(history.zone)
    member = member_facts(history.members[0])
    now = history.now
    change = next_change(condition, member, now, LifecycleThresholds(), zone=zone)
    before = truth(condition, member, now, zone)

    event("flips" if change else "never flips")
    end = change if change is not None else now + 800 * DAY
    probes = [min(now + (end - now) * f, end - US) for f in fractions] + [end - US]
    midnights = [
        local_dates.local(now.astimezone(zone).date() + k * DAY, datetime.min.time(), history.zone)
        for k in range(1, 9)
    ]
    probes += [t + d for t in midnights for d in (-US, timedelta(0))]
    probes = [t for t in probes if now < t < end]
    assert [truth(condition, member, t, zone) for t in probes] == [before] * len(probes), condition
    if change is None:
        assert truth(condition, member, now + LIMIT / 2, zone) == before or not is_time_dependent(condition)
        return
    assert is_time_dependent(condition)
    assert truth(condition, member, change, zone) != before, condition


# ---------- rule <-> tree ----------


@settings(max_examples=300)
@given(
    tree=st.recursive(
        v2_dates_leaves(),
        lambda c: st.lists(c, max_size=3).map(lambda x: All(tuple(x))) | c.map(Not),
        max_leaves=6,
    )
)
def test_v2_date_trees_round_trip_through_json_and_rules(tree: Node) -> None:
    assert parse_condition(condition_to_json(tree)) == tree
    rule = render_rule(tree)
    assert render_rule(parse_rule(rule)) == rule


@pytest.mark.parametrize(
    ("rule", "tree"),
    [
        (
            "days_to_anniversary(birthDate) <= 6",
            {"date": "birthDate", "fn": "days_to_anniversary", "op": "lte", "value": 6},
        ),
        ("days_since(joinedAt) >= 30", {"date": "joinedAt", "fn": "days_since", "op": "gte", "value": 30}),
        (
            'device.os = "Android" and version(device.appVersion) < "5.0"',
            {
                "all": [
                    {"attr": "device.os", "op": "eq", "value": "Android"},
                    {"attr": "device.appVersion", "op": "lt", "value": "5.0", "as": "version"},
                ]
            },
        ),
        ('not channels contains "PUSH"', {"not": {"attr": "channels", "op": "contains", "value": "PUSH"}}),
        ("exists(birthDate) = false", {"attr": "birthDate", "op": "exists", "value": False}),
        ("exists(birthDate)", {"attr": "birthDate", "op": "exists", "value": True}),
        (
            "exists(days_since(signup)) = false",
            {"date": "signup", "fn": "days_since", "op": "exists", "value": False},
        ),
        (
            'version(appVersion) in ["1.0", "v2"]',
            {"attr": "appVersion", "op": "in", "value": ["1.0", "v2"], "as": "version"},
        ),
    ],
)
def test_the_spec_forms_parse_render_and_round_trip(rule: str, tree: dict[str, Any]) -> None:
    assert condition_to_json(parse_rule(rule)) == tree
    assert render_rule(parse_condition(tree)) == rule


def test_exists_true_parses_in_its_long_form_too() -> None:
    assert parse_rule("exists(birthDate) = true") == parse_rule("exists(birthDate)")
    assert parse_rule('not (channels contains "PUSH")') == parse_rule('not channels contains "PUSH"')


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("version(app) < 5", 'column 16: expected a version such as "5.0"'),
        ('version(app) < "1.2.3.4.5"', "column 16: expected a version"),
        ('version(app) contains "1"', "column 23: contains does not apply to versions"),
        ("days_since() > 1", "column 12: expected an attribute path such as birthDate"),
        ("days_since(birthDate > 1", "column 22: expected ')' after the attribute path, found '>'"),
        ('days_to_anniversary(birthDate) = "x"', "column 34: "),
        ("exists(birthDate) = maybe", "column 21: expected true or false"),
    ],
)
def test_bad_rules_name_the_column_and_what_was_expected(rule: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(rule)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"date": "birthDate", "fn": "weeks_since", "op": "gt", "value": 1}, "$.fn: unknown date function"),
        (
            {"date": "birth date", "fn": "days_since", "op": "gt", "value": 1},
            "$.date: expected an attribute path",
        ),
        ({"attr": "v", "op": "lt", "value": "5.0", "as": "semver"}, "$.as: unknown conversion"),
        ({"attr": "v", "op": "lt", "value": "five", "as": "version"}, "$.value: expected a version"),
        ({"date": "birthDate", "fn": "days_since", "op": "gt", "value": "1"}, "$.value: "),
    ],
)
def test_bad_trees_name_the_path(tree: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_condition(tree)
    assert message in str(caught.value)


# ---------- the meaning, pinned ----------


def test_versions_compare_component_by_component() -> None:
    assert version_key("10.2") == (10, 2)
    assert version_key("10.2") > version_key("5.0")  # type: ignore[operator]
    assert version_key("5") == version_key("5.0.0") == version_key("v5.0") == version_key("05.00")
    assert version_key("5.0.0.0.1") > version_key("5")  # type: ignore[operator]
    for bad in ("v", "", "5..0", "5.", ".5", "5.a", "V5", "\uff15", 5, None):
        assert version_key(bad) is None, bad


def test_29_february_counts_on_1_march_in_other_years() -> None:
    leap_day = date(2000, 2, 29)
    assert days_to_anniversary(leap_day, date(2027, 2, 28)) == 1
    assert days_to_anniversary(leap_day, date(2027, 3, 1)) == 0
    assert days_to_anniversary(leap_day, date(2028, 2, 29)) == 0
    assert days_to_anniversary(leap_day, date(2028, 3, 1)) == 365
    assert days_to_anniversary(date(1990, 3, 1), date(2028, 2, 29)) == 1
    assert days_to_anniversary(date(1990, 12, 31), date(2026, 1, 1)) == 364


def test_datetimes_with_offsets_are_converted_to_the_local_date() -> None:
    istanbul = ZoneInfo("Europe/Istanbul")
    assert date_of("2026-03-01T22:30:00Z", istanbul) == date(2026, 3, 2)
    assert date_of("2026-03-01T22:30:00Z", UTC) == date(2026, 3, 1)
    assert date_of("2026-03-02T01:30+0300", UTC) == date(2026, 3, 1)
    assert date_of("2026-03-01", istanbul) == date(2026, 3, 1)
    for bad in ("2026-03-01T10:00:00", "2026-02-30", "2026-3-1", "1.3.2026", 20260301):
        assert date_of(bad, istanbul) is None


ISTANBUL = "Europe/Istanbul"


def at_local(day: date, hour: int, minute: int, zone: str = ISTANBUL) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def test_the_istanbul_login_at_01_30_counts_for_its_local_day(harness: Harness) -> None:
    """The issue's example: three days of logins at 01:30 Istanbul time (22:30 UTC the day before)."""
    days = [date(2026, 3, 13), date(2026, 3, 14), date(2026, 3, 15)]
    logins = tuple(EventSpec("login", at_local(d, 1, 30)) for d in days)
    now = at_local(date(2026, 3, 15), 9, 0)
    member = MemberSpec(now - 30 * DAY, {}, [], logins)
    rule = {"metric": {"event": "login", "agg": "streak"}, "op": "gte", "value": 3}
    distinct = {"metric": {"event": "login", "agg": "distinct_days", "window": "7d"}, "op": "eq", "value": 3}

    assert holds(harness, History(ISTANBUL, now, (member,)), rule) == [True]
    assert holds(harness, History(ISTANBUL, now, (member,)), distinct) == [True]
    # in UTC the same logins fall on 12, 13 and 14 March: still 3 days, but none "today" (15 March)
    assert holds(harness, History("UTC", now, (member,)), rule) == [True]
    later = at_local(date(2026, 3, 17), 0, 0)  # two local midnights later the streak is over
    assert holds(harness, History(ISTANBUL, later - US, (member,)), rule) == [True]
    assert holds(harness, History(ISTANBUL, later, (member,)), rule) == [False]
    change = next_change(
        parse_condition(rule), member_facts(member), now, LifecycleThresholds(), zone=ZoneInfo(ISTANBUL)
    )
    assert change == later


def test_birthday_this_week_and_the_anniversary_of_joining(harness: Harness) -> None:
    now = at_local(date(2027, 2, 25), 23, 30, "America/New_York")  # 26 Feb 04:30 UTC
    members = (
        MemberSpec(now - 400 * DAY, {"birthDate": "2000-02-29"}, [], ()),  # 1 March 2027: in 4 days
        MemberSpec(now - 400 * DAY, {"birthDate": "1990-03-04"}, [], ()),  # in 7 days: not this week
        MemberSpec(now - 400 * DAY, {"birthDate": "1990-02-25"}, [], ()),  # today, local
        MemberSpec(now - 400 * DAY, {"birthDate": "1990-02-26"}, [], ()),  # tomorrow local (today in UTC)
        MemberSpec(now - 400 * DAY, {"birthDate": "not a date"}, [], ()),
        MemberSpec(now - 400 * DAY, {}, [], ()),
    )
    history = History("America/New_York", now, members)
    week = {"date": "birthDate", "fn": "days_to_anniversary", "op": "lte", "value": 6}
    today = {"date": "birthDate", "fn": "days_to_anniversary", "op": "eq", "value": 0}
    absent = {"not": {"date": "birthDate", "fn": "days_to_anniversary", "op": "gte", "value": 0}}

    assert holds(harness, history, week) == [True, False, True, True, False, False]
    assert holds(harness, history, today) == [False, False, True, False, False, False]
    assert holds(harness, history, absent) == [False, False, False, False, True, True]


def test_version_and_channels_through_both_evaluators(harness: Harness) -> None:
    now = datetime(2026, 3, 15, 12, tzinfo=UTC)
    versions = ["10.2", "4.9.9", "5", "v5.0.1", "beta", None]
    members = tuple(
        MemberSpec(now, {"device": {"os": "Android", "appVersion": v}}, c, ())
        for v, c in zip(versions, [["PUSH"], [], ["SMS", "PUSH"], ["push"], ["EMAIL"], []], strict=True)
    )
    history = History("UTC", now, members)
    old = parse_condition(
        condition_to_json(parse_rule('device.os = "Android" and version(device.appVersion) < "5.0"'))
    )
    push_disabled = condition_to_json(parse_rule('not (channels contains "PUSH")'))

    assert holds(harness, history, condition_to_json(old)) == [False, True, False, False, False, False]
    assert holds(harness, history, push_disabled) == [False, True, False, True, True, True]
    text = {"all": [{"attr": "device.appVersion", "op": "lt", "value": "5.0"}]}  # version 1: text order
    assert holds(harness, history, text)[0] is True  # "10.2" < "5.0" as text: what version() fixes


def test_new_nodes_are_typed() -> None:
    node = parse_rule('days_since(birthDate) > 3 and version(app) >= "2"')
    assert isinstance(node, type(parse_rule("true and true")))
    date_node, version_node = node.children  # type: ignore[union-attr]
    assert date_node == DateCompare("birthDate", DateFn.DAYS_SINCE, Op.GT, 3)
    assert version_node == VersionCompare("app", Op.GTE, "2")


def test_flips_happen_at_local_midnights_across_dst_switches() -> None:
    """New York: a login streak ends at the local midnight two days on, whatever the offset then."""
    new_york = ZoneInfo("America/New_York")
    rule = parse_rule("streak(login) >= 1")
    spring = MemberSpec(
        datetime(2026, 1, 1, tzinfo=UTC),
        {},
        [],
        (EventSpec("login", at_local(date(2026, 3, 7), 23, 30, "America/New_York")),),
    )
    now = at_local(date(2026, 3, 8), 12, 0, "America/New_York")  # after the switch to EDT (-4)
    change = next_change(rule, member_facts(spring), now, LifecycleThresholds(), zone=new_york)
    assert change == datetime(2026, 3, 9, 4, 0, tzinfo=UTC)  # midnight of 9 March, EDT
    autumn = MemberSpec(
        datetime(2026, 1, 1, tzinfo=UTC),
        {},
        [],
        (EventSpec("login", at_local(date(2026, 10, 31), 12, 0, "America/New_York")),),
    )
    now = at_local(date(2026, 11, 1), 12, 0, "America/New_York")  # after the switch back to EST (-5)
    change = next_change(rule, member_facts(autumn), now, LifecycleThresholds(), zone=new_york)
    assert change == datetime(2026, 11, 2, 5, 0, tzinfo=UTC)  # midnight of 2 November, EST
    birthday = parse_rule("days_to_anniversary(birthDate) = 0")
    chatham = ZoneInfo("Pacific/Chatham")  # +13:45 until 5 April 2026 03:45, then +12:45
    member = member_facts(MemberSpec(datetime(2026, 1, 1, tzinfo=UTC), {"birthDate": "1990-04-06"}, [], ()))
    now = at_local(date(2026, 4, 4), 12, 0, "Pacific/Chatham")
    assert next_change(birthday, member, now, LifecycleThresholds(), zone=chatham) == datetime(
        2026, 4, 5, 11, 15, tzinfo=UTC
    )  # 00:00 on 6 April at +12:45


# ---------- the horizon decades ahead, and in Santiago's DST switches ----------

#: Found by the time-flip property: `age >= 34` holds the anniversary back until 2034, when
#: 1 March (29 February's day in a common year) is the 34th birthday and the anniversary itself.
LEAP_DAY_AT_34 = {
    "all": [
        {"attr": "age", "op": "gte", "value": 34},
        {"date": "birthDate", "fn": "days_to_anniversary", "op": "ne", "value": 0},
    ]
}


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Chatham", "America/St_Johns", "America/Santiago"])
@pytest.mark.parametrize("now_day", [date(2026, 6, 15), date(2033, 6, 1), date(2034, 2, 28)])
def test_an_anniversary_held_back_by_age_flips_decades_ahead(zone: str, now_day: date) -> None:
    """Born 29 February 2000: 34 on 1 March 2034 (the anniversary, count 0), so true from 2 March."""
    condition = parse_condition(LEAP_DAY_AT_34)
    member = member_facts(MemberSpec(datetime(2020, 1, 1, tzinfo=UTC), {"birthDate": "2000-02-29"}, [], ()))
    now = local_dates.local(now_day, datetime.min.time(), zone) + timedelta(hours=12)
    expected = local_dates.local(date(2034, 3, 2), datetime.min.time(), zone)

    change = next_change(condition, member, now, LifecycleThresholds(), zone=ZoneInfo(zone))

    assert change == expected
    assert truth(condition, member, expected - US, ZoneInfo(zone)) is False
    assert truth(condition, member, expected, ZoneInfo(zone)) is True
    # false again on each anniversary: 1 March 2035, and 29 February in the leap year 2036
    flips = [expected]
    for _ in range(4):
        found = next_change(condition, member, flips[-1], LifecycleThresholds(), zone=ZoneInfo(zone))
        assert found is not None
        flips.append(found)
    days = [(2035, 3, 1), (2035, 3, 2), (2036, 2, 29), (2036, 3, 1)]
    assert flips[1:] == [local_dates.local(date(*d), datetime.min.time(), zone) for d in days]


SANTIAGO = "America/Santiago"
#: Santiago's switches in 2026: 5 April 03:00 UTC the clocks go back from 24:00 to 23:00 (the last hour
#: of 4 April occurs twice); 6 September 04:00 UTC they go forward from 24:00 to 01:00 (no midnight).
SANTIAGO_SWITCHES = (datetime(2026, 4, 5, 3, tzinfo=UTC), datetime(2026, 9, 6, 4, tzinfo=UTC))


def _santiago_members(switch: datetime) -> list[MemberSpec]:
    zone = ZoneInfo(SANTIAGO)
    day = (switch - US).astimezone(zone).date()  # the local date before the switch
    logins = tuple(EventSpec("login", at_local(day - k * DAY, 22, 0, SANTIAGO)) for k in range(2))
    return [
        MemberSpec(switch - 400 * DAY, {"birthDate": f"1992-{d.month:02d}-{d.day:02d}"}, [], logins)
        for d in (day, day + DAY, day + 2 * DAY)
    ]


@pytest.mark.parametrize("switch", SANTIAGO_SWITCHES, ids=["fall-back", "spring-forward"])
@pytest.mark.parametrize(
    "rule",
    [
        "streak(login) >= 2",
        "streak(login) = 0",
        "days_to_anniversary(birthDate) = 0",
        "days_to_anniversary(birthDate) <= 1",
        "age >= 34",
        "days_since(birthDate) > 12600",
        "distinct_days(login, 1d) >= 1",
    ],
)
def test_no_flip_is_missed_across_santiagos_switches(switch: datetime, rule: str) -> None:
    """From 30 hours before the switch to 3 days after, every 10 minutes and a microsecond either side
    of each switch and local midnight: truth is constant until `next_change` and differs there, again
    from each change (what the scheduler does)."""
    zone = ZoneInfo(SANTIAGO)
    condition = parse_rule(rule)
    for spec in _santiago_members(switch):
        member = member_facts(spec)
        now = switch - timedelta(hours=30)
        stop = switch + 3 * DAY
        probes = [now + k * timedelta(minutes=10) for k in range(int((stop - now) / timedelta(minutes=10)))]
        edges = [
            switch,
            *(
                local_dates.local(switch.date() + k * DAY, datetime.min.time(), SANTIAGO)
                for k in range(-2, 4)
            ),
        ]
        probes += [t + d for t in edges for d in (-US, timedelta(0), US)]
        while now < stop:
            change = next_change(condition, member, now, LifecycleThresholds(), zone=zone)
            before = truth(condition, member, now, zone)
            end = stop if change is None else min(change, stop)
            window = [t for t in probes if now < t < end]
            assert [truth(condition, member, t, zone) for t in window] == [before] * len(window), (rule, now)
            if change is None or change >= stop:
                break
            assert truth(condition, member, change, zone) != before, (rule, change)
            now = change
