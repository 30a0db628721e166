"""Segment templates shipped with the engine: the seed material's examples, ready to create.

The demo program creates the B2C ones; docs/segments.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    key: str
    name: str
    rule: str
    kind: str = "DYNAMIC"
    applies_tag: str | None = None
    audience: str = "B2C"


TEMPLATES = (
    Template(
        "vip",
        "VIP café guests",
        "count(visit, 30d) >= 25 and avg(purchase.amount, 30d) >= 400",
        applies_tag="VIP",
    ),
    Template("loyal", "Loyal guests", "count(visit, 30d) > 10 and avg(purchase.amount, 30d) >= 200"),
    Template("potential_loyal", "Potential loyal", "count(purchase) = 1 and days_since_first(purchase) >= 7"),
    Template("at_risk", "At risk", "days_since_last(purchase) >= 20 and days_since_last(purchase) < 40"),
    Template("lost", "Lost", "days_since_last(purchase) >= 40"),
    Template("win_back", "Win-back", "days_since_last(purchase) >= 30"),
    Template("active", "Active app users", "streak(login) >= 3", applies_tag="active"),
    Template(
        "non_compliant",
        "Non-compliant",
        "count(compliance_violation, 90d) >= 1",
        applies_tag="non-compliant",
    ),
    # versions compare component by component: "10.2" is not below "5.0" (as text it was)
    Template(
        "old_android", "Old app on Android", 'device.os = "Android" and version(device.appVersion) < "5.0"'
    ),
    Template("push_disabled", "Push disabled", 'not (channels contains "PUSH")'),
    Template("coffee_lovers", "Coffee lovers", 'count(purchase, 90d where category = "coffee") >= 3'),
    # the condition language's version 2 (docs/segments.md): the seed material's examples
    Template(
        "coffee_over_tea",
        "Coffee over tea",
        'count(purchase, 90d where category = "coffee") > count(purchase, 90d where category = "tea")',
    ),
    Template(
        "readers", "Opens a fifth of messages", "count(message_opened, 90d) / count(message_sent, 90d) >= 0.2"
    ),
    Template("spent_points", "Spent points last month", "points_redeemed(30d) > 0"),
    Template("points_expiring", "Points expiring this month", "points_expiring(30d) > 0"),
    Template("birthday_week", "Birthday this week", "days_to_anniversary(birthDate) <= 6"),
    Template("favourite_store_s1", "Favourite store S1", 'top(purchase.store, 90d) = "S1"'),
    Template(
        "campaign_not_reached",
        "Spring campaign did not reach",
        'count(message_failed, 30d where template = "spring") '
        '+ count(message_suppressed, 30d where template = "spring") >= 1',
    ),
    Template("champions", "RFM champions", 'rfm.label = "Champions"', kind="COMPUTED"),
    Template("abc_a", "Top 80 % of revenue", 'abcClass = "A"', kind="COMPUTED"),
    Template(
        "dealers_low_training",
        "High-volume Istanbul dealers, low training",
        'kind = DEALER and city = "Istanbul" and sum(sale.amount, 90d) > 100000 '
        "and count(training_completed, 90d) < 2",
        audience="B2B",
    ),
    Template(
        "dealer_group_over_target",
        "Dealer group over target",
        "kind = DEALER and org.sum(sale.amount, 90d) > 1000000",
        audience="B2B",
    ),
    Template(
        "idea_champions",
        "Employee idea champions",
        "kind = EMPLOYEE and count(suggestion_submitted, 30d) >= 3",
        audience="B2E",
    ),
)
