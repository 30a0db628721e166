"""The rule language (domain/segments/rules.py) and the JSON tree's errors: round trips, the spec's examples, errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.enums import MemberKind
from domain.errors import InvalidInput
from domain.segments.conditions import (
    Agg,
    All,
    AnyOf,
    AttrCompare,
    ExprCompare,
    HasTag,
    InOrganization,
    InSegment,
    KindIs,
    Metric,
    MetricCompare,
    Node,
    Not,
    Op,
    Window,
    condition_to_json,
    parse_condition,
)
from domain.segments.rules import normalise, parse_rule, render_rule
from tests.support.strategies import conditions


def assert_same(actual: Node, expected: Node) -> None:
    """Equal trees with equal value types: `==` alone takes True for 1 and 1 for 1.0."""
    assert actual == expected
    assert repr(actual) == repr(expected)


def count(event: str, window: Window | None = None, where: tuple[tuple[str, Any], ...] = ()) -> Metric:
    return Metric(event, Agg.COUNT, None, window, where)


def attr(path: str, op: Op, value: Any) -> AttrCompare:
    return AttrCompare(path, op, value)


D30, D90 = Window(30, "d"), Window(90, "d")


# ---------- round trips over generated trees ----------


@given(conditions())
def test_generated_trees_survive_json(tree: Node) -> None:
    assert_same(parse_condition(condition_to_json(tree)), tree)


@given(conditions())
def test_a_rendered_rule_parses_back_to_the_normalised_tree(tree: Node) -> None:
    assert_same(parse_rule(render_rule(tree)), normalise(tree))


@given(conditions())
def test_a_tree_renders_like_its_normal_form(tree: Node) -> None:
    assert render_rule(normalise(tree)) == render_rule(tree)


@given(conditions())
def test_normalised_trees_round_trip_exactly_and_the_parser_yields_them(tree: Node) -> None:
    normal = normalise(tree)
    parsed = parse_rule(render_rule(normal))

    assert_same(parsed, normal)
    assert_same(normalise(parsed), parsed)
    assert_same(normalise(normal), normal)


# ---------- the spec's examples ----------

SPEC_RULES = [
    "count(visit, 30d) >= 25 and avg(purchase.amount, 30d) >= 400",
    "count(visit, 30d) > 10 and avg(purchase.amount, 30d) >= 200",
    "count(purchase) = 1 and days_since_first(purchase) >= 7",
    "days_since_last(purchase) >= 20 and days_since_last(purchase) < 40",
    "days_since_last(purchase) >= 40",
    "streak(login) >= 3",
    "days_since_last(purchase) >= 30",
    'kind = DEALER and city = "Istanbul" and sum(sale.amount, 90d) > 100000 and count(training_completed, 90d) < 2',
    "kind = EMPLOYEE and count(suggestion_submitted, 30d) >= 3",
    'count(purchase, 90d where category = "coffee") >= 3',
    'device.os = "Android" and device.appVersion < "5.0"',
]


@pytest.mark.parametrize("rule", SPEC_RULES)
def test_every_spec_rule_is_already_normalised(rule: str) -> None:
    assert render_rule(parse_rule(rule)) == rule


@pytest.mark.parametrize(
    ("rule", "tree"),
    [
        (
            SPEC_RULES[0],
            All(
                (
                    MetricCompare(count("visit", D30), Op.GTE, 25),
                    MetricCompare(Metric("purchase", Agg.AVG, "amount", D30), Op.GTE, 400),
                )
            ),
        ),
        (
            SPEC_RULES[2],
            All(
                (
                    MetricCompare(count("purchase"), Op.EQ, 1),
                    MetricCompare(Metric("purchase", Agg.DAYS_SINCE_FIRST), Op.GTE, 7),
                )
            ),
        ),
        (SPEC_RULES[5], MetricCompare(Metric("login", Agg.STREAK), Op.GTE, 3)),
        (
            SPEC_RULES[7],
            All(
                (
                    KindIs(MemberKind.DEALER),
                    attr("city", Op.EQ, "Istanbul"),
                    MetricCompare(Metric("sale", Agg.SUM, "amount", D90), Op.GT, 100000),
                    MetricCompare(count("training_completed", D90), Op.LT, 2),
                )
            ),
        ),
        (SPEC_RULES[9], MetricCompare(count("purchase", D90, (("category", "coffee"),)), Op.GTE, 3)),
        (
            SPEC_RULES[10],
            All((attr("device.os", Op.EQ, "Android"), attr("device.appVersion", Op.LT, "5.0"))),
        ),
    ],
)
def test_spec_rules_parse_to_their_trees(rule: str, tree: Node) -> None:
    assert_same(parse_rule(rule), tree)


def test_the_coffee_lovers_counter_example_compares_two_metrics_in_version_2() -> None:
    rule = 'count(purchase, 90d where category = "coffee") > count(purchase, 90d where category = "tea")'

    assert parse_rule(rule) == ExprCompare(
        count("purchase", D90, (("category", "coffee"),)),
        Op.GT,
        count("purchase", D90, (("category", "tea"),)),
    )


# ---------- reading rules ----------


def test_keywords_aggregates_windows_and_kinds_are_case_insensitive() -> None:
    tree = parse_rule('COUNT(visit, 30D) >= 1 AND Kind = "dealer"')

    assert_same(tree, All((MetricCompare(count("visit", D30), Op.GTE, 1), KindIs(MemberKind.DEALER))))


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    a, b, c = attr("a", Op.EQ, 1), attr("b", Op.EQ, 2), attr("c", Op.EQ, 3)

    assert_same(parse_rule("not a = 1 and b = 2 or c = 3"), AnyOf((All((Not(a), b)), c)))
    assert_same(parse_rule("a = 1 or b = 2 and c = 3"), AnyOf((a, All((b, c)))))
    assert_same(parse_rule("not (a = 1 or b = 2)"), Not(AnyOf((a, b))))


def test_parentheses_group_but_same_kind_groups_are_flattened() -> None:
    a, b, c = attr("a", Op.EQ, 1), attr("b", Op.EQ, 2), attr("c", Op.EQ, 3)

    assert_same(parse_rule("(a = 1 and b = 2) and c = 3"), All((a, b, c)))
    assert_same(parse_rule("(a = 1 or b = 2) and c = 3"), All((AnyOf((a, b)), c)))
    assert_same(parse_rule("((a = 1))"), a)
    assert_same(parse_rule("true and a = 1"), All((All(()), a)))
    assert_same(parse_rule("not not false"), Not(Not(AnyOf(()))))


def test_predicates_and_operators() -> None:
    rule = (
        'in_segment("vip") and has_tag("at-risk") and organization = "ACME \\"1\\"" and kind = "customer" '
        'and exists(city) and not exists(rfm.label) and city not in ["a", 1, true] and tier in [] '
        'and age between [18, 30.5] and pointsBalance != -1.5e3 and tags contains "x"'
    )

    assert_same(
        parse_rule(rule),
        All(
            (
                InSegment("vip"),
                HasTag("at-risk"),
                InOrganization('ACME "1"'),
                KindIs(MemberKind.CUSTOMER),
                attr("city", Op.EXISTS, True),
                Not(attr("rfm.label", Op.EXISTS, True)),
                attr("city", Op.NOT_IN, ["a", 1, True]),
                attr("tier", Op.IN, []),
                attr("age", Op.BETWEEN, [18, 30.5]),
                attr("pointsBalance", Op.NE, -1500.0),
                attr("tags", Op.CONTAINS, "x"),
            )
        ),
    )


def test_windowless_aggregates_drop_the_window_like_the_json_tree() -> None:
    assert_same(parse_rule("streak(login, 7d) >= 3"), MetricCompare(Metric("login", Agg.STREAK), Op.GTE, 3))
    assert_same(parse_rule("count(visit, all) >= 3"), MetricCompare(count("visit"), Op.GTE, 3))


# ---------- rendering ----------


@pytest.mark.parametrize(
    ("tree", "rule"),
    [
        (All(()), "true"),
        (AnyOf(()), "false"),
        (All((HasTag("x"),)), 'has_tag("x")'),
        (
            All((All((HasTag("a"), HasTag("b"))), HasTag("c"))),
            'has_tag("a") and has_tag("b") and has_tag("c")',
        ),
        (
            AnyOf((All((HasTag("a"), HasTag("b"))), HasTag("c"))),
            '(has_tag("a") and has_tag("b")) or has_tag("c")',
        ),
        (Not(AnyOf((HasTag("a"), HasTag("b")))), 'not (has_tag("a") or has_tag("b"))'),
        (attr("city", Op.EXISTS, False), "exists(city) = false"),
        (
            MetricCompare(Metric("purchase", Agg.MAX, "amount"), Op.EXISTS, True),
            "exists(max(purchase.amount))",
        ),
        (attr("kind", Op.EQ, "x"), 'attr("kind") = "x"'),
        (attr("score", Op.IN, [1.0, 2, False]), "score in [1.0, 2, false]"),
        (attr("note", Op.EQ, 'a"b\\c\nd\x01é'), 'note = "a\\"b\\\\c\\nd\\u0001é"'),
        (
            MetricCompare(count("purchase", None, (("category", "coffee"), ("size", 2))), Op.GT, 0),
            'count(purchase where category = "coffee", size = 2) > 0',
        ),
        (MetricCompare(count("visit", Window(12, "h")), Op.LTE, 1e16), "count(visit, 12h) <= 1e+16"),
    ],
)
def test_the_normalised_rule_of_a_tree(tree: Node, rule: str) -> None:
    assert render_rule(tree) == rule
    assert_same(parse_rule(rule), normalise(tree))


# ---------- errors ----------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "cnt(visit) > 1",
            "rule: column 1: unknown aggregate 'cnt'; expected one of: count, sum, avg, min, max, "
            "distinct_days, days_since_last, days_since_first, streak, distinct, top",
        ),
        (
            "count(visit, 30x) > 1",
            'rule: column 14: malformed window \'30x\'; expected "<n>d", "<n>h" or "all"',
        ),
        (
            'count(purchase, 90d where2 category = "coffee") > 1',
            "rule: column 21: expected ')' after the window, found 'where2'",
        ),
        ("count(visit, 30d", "rule: column 17: expected ')' after the window, found end of rule"),
        (
            'city like "x"',
            "rule: column 6: unknown operator 'like'; expected one of: =, !=, >, >=, <, <=, in, not in, contains, between",
        ),
        ('(city = "x"', "rule: column 12: expected ')' to close the '(' at column 1, found end of rule"),
        ('city = "x" and', "rule: column 15: expected a condition, found end of rule"),
        ("city = 1 city = 2", "rule: column 10: expected 'and', 'or' or the end of the rule, found 'city'"),
        ('avg(purchase.amount) > "400"', "rule: column 24: a metric compares with a number"),
        ("sum(purchase) > 1", "rule: column 5: sum needs a field: purchase.amount or purchase.PROPERTY"),
        ("count(visit) contains 1", "rule: column 23: contains applies to attributes, not to metrics"),
        ("kind = MANAGER", "rule: column 8: unknown kind 'MANAGER'; expected CUSTOMER, DEALER or EMPLOYEE"),
        ('in_segment("no spaces")', "rule: column 12: expected a segment key matching [A-Za-z0-9_-]{1,64}"),
        ('city = "abc', "rule: column 8: unterminated string: expected a closing '\"'"),
        ("city = 1.2.3", "rule: column 8: malformed number '1.2.3'"),
        ("count(visit, 4000d) > 1", "rule: column 14: window '4000d' is longer than 3660 days"),
        ("not " * 33 + "a = 1", "rule: column 129: a condition nests at most 32 levels"),
    ],
)
def test_malformed_rules_are_refused_naming_the_column(rule: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(rule)

    assert caught.value.message == message


@pytest.mark.parametrize(
    ("tree", "path", "message"),
    [
        ({"all": [{"attr": "city", "op": "like", "value": 1}]}, "$.all[0].op", "unknown operator 'like'"),
        ({"any": [{"not": {"metric": {"event": "visit", "agg": "cnt"}, "op": "gt", "value": 1}}]},
         "$.any[0].not.metric.agg", "unknown aggregate 'cnt'"),
        ({"metric": {"event": "visit", "agg": "count", "window": "30x"}, "op": "gt", "value": 1},
         "$.metric.window", "malformed window '30x'"),
        ({"metric": {"event": "visit", "agg": "count"}, "op": "gt", "value": "1"}, "$.value",
         "a metric compares with a number"),
        ({"all": [{"tag": "ok"}, {"segment": "no spaces"}]}, "$.all[1].segment", "expected a segment key"),
    ],
)  # fmt: skip
def test_malformed_trees_are_refused_naming_the_json_path(tree: Any, path: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_condition(tree)

    assert caught.value.message.startswith(f"condition {path}: ")
    assert message in caught.value.message


@given(
    conditions(max_leaves=4),
    st.integers(0, 10_000),
    st.sampled_from(["", "(", ")", '"', "and ", "not ", ",", "[", "="]),
)
def test_damaged_rules_fail_cleanly_naming_a_column(tree: Node, cut: int, insert: str) -> None:
    rule = render_rule(tree)
    cut %= len(rule) + 1
    damaged = rule[:cut] + insert

    message = ""
    try:
        parse_rule(damaged)
    except InvalidInput as error:
        message = error.message

    assert message == "" or message.startswith("rule: column ")


def test_the_node_limit_is_enforced_at_a_column() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_rule(" and ".join(["a = 1"] * 501))

    assert caught.value.message == "rule: column 5001: a condition has at most 500 nodes"
