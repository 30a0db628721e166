"""Segments benchmark: full recompute through the engine next to hand-written SQL, and per-event cost.

Everything runs on one fresh PostgreSQL database migrated with `migrations.upgrade` (dropped at
the end). The data is generated in the database with INSERT ... SELECT generate_series (members,
ACCEPTED events over 120 days, the daily `event_aggregates` built from the events with one
GROUP BY, a few manual tags), then ANALYZEd (autovacuum is off on this machine).

* batch: the 20 DYNAMIC segments of `definitions(0)` recomputed by
  `SegmentEngine().recompute(session, program_id, None, now)` in one `Database.unit_of_work()`
  (compiled SELECT into a temp table, change log, membership rows, commit), next to the floor: for
  each definition one hand-written INSERT INTO a temp table SELECT ... (GROUP BY over events or
  event_aggregates), then the membership rows and the ENTERED change-log rows written from it into
  scratch tables with the same columns, indexes and foreign keys as `segment_memberships` and
  `segment_changes`, one asyncpg transaction for all 20. Then the engine recomputes all 20 a
  second time (steady state: the segments are already full, nothing changes). Both sides
  must end with the same member set per definition (checked, reported loudly).
* incremental: `SegmentEngine.members_changed` for single-member changes (the event type drawn
  from the event mix), p50/p99 of the call, with 20 and with 200 segments (200 = the 20 shapes
  with 10 variants of thresholds and windows).
* ingest: `EventService.record_events` in process (AllowAll auditor, no HTTP), batches of 500,
  with the 20 segments defined vs on a program with none (same members, same event shape).
* refund filter: the batch recompute (from empty, then again full) and the incremental calls with
  the `not_refunded()` probe switched off (`refund_filter(False)`, patched in this process only)
  next to the same with it on, interleaved, as ratios with / without.

The ledger gets one POSTED accrual per generated event that earned points (as `record_events`
writes them; `--no-ledger` leaves it empty), so the refund probe searches an index of realistic
size. No event is refunded, so the hand-written SQL needs no refund filter to give the same sets.

Progress goes to stderr; the last line on stdout is one JSON object with the figures.
Usage: .venv/bin/python bench/segments.py [--quick] [--members N] [--events N] ...
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ColumnElement, select, text, true
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

import migrations
from domain.audit import AllowAll
from domain.changes import MembersChanged
from domain.clock import SystemClock
from domain.db.engine import Database, create_engine
from domain.events.service import EventService
from domain.events.validation import EventDraft
from domain.models import Segment
from domain.segments import compile as segments_compile
from domain.segments import fact_queries as segments_fact_queries
from domain.segments.compile import Compilation
from domain.segments.conditions import condition_to_json
from domain.segments.engine import SegmentEngine
from domain.segments.membership import Recomputed
from domain.segments.rules import parse_rule

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
UNITS = 10_000  # amounts are stored x 10^4 (domain.db.types)
HISTORY_DAYS = 120
ORGANIZATIONS = 50
CITIES = ("Istanbul", "Ankara", "Izmir", "Bursa", "Antalya", "Berlin", "Paris", "Madrid")
#: Event mix (cumulative bounds in the generator SQL): purchase 45%, visit 20%, login 20%, sale 8%,
#: training_completed 3%, suggestion_submitted 4%.
MIX = (
    ("purchase", 0.45),
    ("visit", 0.20),
    ("login", 0.20),
    ("sale", 0.08),
    ("training_completed", 0.03),
    ("suggestion_submitted", 0.04),
)


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------------- refund filter

#: The segment modules that bound `domain.events.refunds.not_refunded` at import time.
REFUND_FILTER_USERS = (segments_compile, segments_fact_queries)
REFUND_FILTER = "not_refunded"


def _no_refund_filter(events: Any) -> ColumnElement[bool]:
    return true()  # and_() drops it: the query is the one before refunds


@contextmanager
def refund_filter(enabled: bool) -> Iterator[None]:
    """Benchmark baseline: with `enabled` False the segment engine's raw-event reads (compiled
    SQL and member facts) leave out the refund probe. Patches the names in this process only."""
    saved = [(module, getattr(module, REFUND_FILTER)) for module in REFUND_FILTER_USERS]
    segments_fact_queries.events.cache_clear()  # its statements are built once: with the filter in force
    try:
        if not enabled:
            for module, _ in saved:
                setattr(module, REFUND_FILTER, _no_refund_filter)
        yield
    finally:
        for module, original in saved:
            setattr(module, REFUND_FILTER, original)
        segments_fact_queries.events.cache_clear()


# ------------------------------------------------------------------------------------ definitions


@dataclass(frozen=True)
class Definition:
    key: str
    rule: str
    #: Hand-written SQL selecting the member ids ($1 program id, $2 now as timestamptz); it may
    #: read `floor_memberships` (the floor's own earlier results) through {seg:KEY} placeholders.
    floor: str


def definitions(k: int) -> list[Definition]:
    """The 20 shapes; variant k (0..9) moves thresholds and windows a little. k = 0 is the base set."""
    s = "" if k == 0 else f"_{k}"
    w = k  # extra days on windows

    def ev(type_: str, days: float | None, extra: str = "") -> str:
        window = (
            ""
            if days is None
            else f" AND e.occurred_at > $2 - interval '{days} days' AND e.occurred_at <= $2"
        )
        return f"e.program_id = $1 AND e.type = '{type_}' AND e.status = 'ACCEPTED'{window}{extra}"

    def ag(type_: str) -> str:
        return f"a.program_id = $1 AND a.event_type = '{type_}'"

    defs = [
        Definition(
            f"vip{s}",
            f"count(visit, {30 + w}d) >= 4 and avg(purchase.amount, {30 + w}d) >= {300 + 10 * k}",
            f"""SELECT v.member_id FROM
                 (SELECT e.member_id FROM events e WHERE {ev("visit", 30 + w)}
                  GROUP BY e.member_id HAVING count(*) >= 4) v
               JOIN (SELECT e.member_id FROM events e WHERE {ev("purchase", 30 + w)}
                  GROUP BY e.member_id
                  HAVING count(e.amount) > 0
                     AND sum(e.amount) >= {(300 + 10 * k) * UNITS} * count(e.amount)) p
               USING (member_id)""",
        ),
        Definition(
            f"loyal{s}",
            f"count(visit, {30 + w}d) > 2 and avg(purchase.amount, {30 + w}d) >= {200 + 10 * k}",
            f"""SELECT v.member_id FROM
                 (SELECT e.member_id FROM events e WHERE {ev("visit", 30 + w)}
                  GROUP BY e.member_id HAVING count(*) > 2) v
               JOIN (SELECT e.member_id FROM events e WHERE {ev("purchase", 30 + w)}
                  GROUP BY e.member_id
                  HAVING count(e.amount) > 0
                     AND sum(e.amount) >= {(200 + 10 * k) * UNITS} * count(e.amount)) p
               USING (member_id)""",
        ),
        Definition(
            f"potential_loyal{s}",
            f"count(purchase) = 1 and days_since_first(purchase) >= {7 + k}",
            f"""SELECT a.member_id FROM event_aggregates a WHERE {ag("purchase")}
                GROUP BY a.member_id
                HAVING sum(a.count) = 1 AND min(a.first_at) <= $2 - interval '{7 + k} days'""",
        ),
        Definition(
            f"at_risk{s}",
            f"days_since_last(purchase) >= {20 + k} and days_since_last(purchase) < {40 + k}",
            f"""SELECT a.member_id FROM event_aggregates a WHERE {ag("purchase")}
                GROUP BY a.member_id
                HAVING max(a.last_at) <= $2 - interval '{20 + k} days'
                   AND max(a.last_at) > $2 - interval '{40 + k} days'""",
        ),
        Definition(
            f"win_back{s}",
            f"days_since_last(purchase) >= {30 + k}",
            f"""SELECT a.member_id FROM event_aggregates a WHERE {ag("purchase")}
                GROUP BY a.member_id HAVING max(a.last_at) <= $2 - interval '{30 + k} days'""",
        ),
        Definition(
            f"active_app{s}",
            f"streak(login) >= {3 + k % 3}",
            # streak >= n: a login on each of the n days ending today, or the n ending yesterday
            f"""SELECT a.member_id FROM event_aggregates a
                WHERE {ag("login")} AND a.day BETWEEN ($2 AT TIME ZONE 'UTC')::date - {3 + k % 3}
                                            AND ($2 AT TIME ZONE 'UTC')::date
                GROUP BY a.member_id
                HAVING count(*) FILTER (WHERE a.day BETWEEN ($2 AT TIME ZONE 'UTC')::date - {3 + k % 3 - 1}
                                                  AND ($2 AT TIME ZONE 'UTC')::date - 1) = {3 + k % 3 - 1}
                   AND bool_or(a.day = ($2 AT TIME ZONE 'UTC')::date
                               OR a.day = ($2 AT TIME ZONE 'UTC')::date - {3 + k % 3})""",
        ),
        Definition(
            f"dealer_istanbul{s}",
            f'kind = DEALER and city = "Istanbul" and sum(sale.amount, {90 + w}d) > {100000 + 5000 * k} '
            f"and count(training_completed, {90 + w}d) < 2",
            f"""SELECT m.id FROM members m
                JOIN (SELECT e.member_id FROM events e WHERE {ev("sale", 90 + w)}
                      GROUP BY e.member_id HAVING sum(e.amount) > {(100000 + 5000 * k) * UNITS}) s
                  ON s.member_id = m.id
                WHERE m.program_id = $1 AND m.kind = 'DEALER' AND m.attributes -> 'city' = '"Istanbul"'
                  AND NOT EXISTS (SELECT 1 FROM events e
                                  WHERE e.member_id = m.id AND {ev("training_completed", 90 + w)}
                                  OFFSET 1)""",
        ),
        Definition(
            f"idea_champion{s}",
            f"kind = EMPLOYEE and count(suggestion_submitted, {30 + w}d) >= {2 + k % 2}",
            f"""SELECT m.id FROM members m
                JOIN (SELECT e.member_id FROM events e WHERE {ev("suggestion_submitted", 30 + w)}
                      GROUP BY e.member_id HAVING count(*) >= {2 + k % 2}) c ON c.member_id = m.id
                WHERE m.program_id = $1 AND m.kind = 'EMPLOYEE'""",
        ),
        Definition(
            f"coffee_lover{s}",
            f'count(purchase, {90 + w}d where category = "coffee") >= 3',
            f"""SELECT e.member_id FROM events e
                WHERE {ev("purchase", 90 + w)} AND e.properties -> 'category' = '"coffee"'
                GROUP BY e.member_id HAVING count(*) >= 3""",
        ),
        Definition(
            f"old_android{s}",
            f'device.os = "Android" and device.appVersion < "{("5.0", "4.5", "5.5", "6.0", "4.0")[k % 5]}"',
            f"""SELECT m.id FROM members m
                WHERE m.program_id = $1 AND m.attributes #> '{{device,os}}' = '"Android"'
                  AND jsonb_typeof(m.attributes #> '{{device,appVersion}}') = 'string'
                  AND (m.attributes #>> '{{device,appVersion}}') COLLATE "C"
                      < '{("5.0", "4.5", "5.5", "6.0", "4.0")[k % 5]}'""",
        ),
        Definition(
            f"regular{s}",
            f"distinct_days(visit, {60 + w}d) >= 3",
            f"""SELECT e.member_id FROM events e WHERE {ev("visit", 60 + w)}
                GROUP BY e.member_id HAVING count(DISTINCT (e.occurred_at AT TIME ZONE 'UTC')::date) >= 3""",
        ),
        Definition(
            f"loyal_not_vip{s}",
            f'in_segment("loyal{s}") and not in_segment("vip{s}")',
            f"""SELECT l.member_id FROM floor_memberships l WHERE l.segment_id = {{seg:loyal{s}}}
                AND NOT EXISTS (SELECT 1 FROM floor_memberships v
                                WHERE v.segment_id = {{seg:vip{s}}} AND v.member_id = l.member_id)""",
        ),
        Definition(
            f"ambassador_or_frequent{s}",
            f'has_tag("ambassador") or count(purchase, {7 + w}d) >= 3',
            f"""SELECT t.member_id FROM member_tags t WHERE t.program_id = $1 AND t.key = 'ambassador'
                UNION
                SELECT e.member_id FROM events e WHERE {ev("purchase", 7 + w)}
                GROUP BY e.member_id HAVING count(*) >= 3""",
        ),
        Definition(
            f"org_dealer{s}",
            f'kind = DEALER and organization = "org-{(7 + k) % ORGANIZATIONS:03d}"',
            f"""SELECT m.id FROM members m JOIN organizations o ON o.id = m.organization_id
                WHERE m.program_id = $1 AND m.kind = 'DEALER' AND o.program_id = $1
                  AND o.external_id = 'org-{(7 + k) % ORGANIZATIONS:03d}'""",
        ),
        Definition(
            f"big_spender{s}",
            f"sum(purchase.amount, {60 + w}d) >= {1500 + 100 * k}",
            f"""SELECT e.member_id FROM events e WHERE {ev("purchase", 60 + w)}
                GROUP BY e.member_id HAVING sum(e.amount) >= {(1500 + 100 * k) * UNITS}""",
        ),
        Definition(
            f"big_ticket{s}",
            f"max(purchase.amount, {30 + w}d) >= {450 + 5 * k}",
            f"""SELECT e.member_id FROM events e WHERE {ev("purchase", 30 + w)}
                GROUP BY e.member_id HAVING max(e.amount) >= {(450 + 5 * k) * UNITS}""",
        ),
        Definition(
            f"no_small_basket{s}",
            f"min(purchase.amount) >= {100 + 10 * k}",
            f"""SELECT a.member_id FROM event_aggregates a WHERE {ag("purchase")}
                GROUP BY a.member_id HAVING min(a.amount_min) >= {(100 + 10 * k) * UNITS}""",
        ),
        Definition(
            f"high_avg_sale{s}",
            f"avg(sale.amount) >= {40000 + 1000 * k}",
            f"""SELECT a.member_id FROM event_aggregates a WHERE {ag("sale")}
                GROUP BY a.member_id
                HAVING sum(a.amount_count) > 0
                   AND sum(a.amount_sum) >= {(40000 + 1000 * k) * UNITS}::numeric * sum(a.amount_count)""",
        ),
        Definition(
            f"recent_login{s}",
            f"count(login, {48 + 6 * k}h) >= 1",
            f"""SELECT DISTINCT e.member_id FROM events e
                WHERE e.program_id = $1 AND e.type = 'login' AND e.status = 'ACCEPTED'
                  AND e.occurred_at > $2 - interval '{48 + 6 * k} hours' AND e.occurred_at <= $2""",
        ),
        Definition(
            f"trained_dealer{s}",
            f"kind = DEALER and count(training_completed) >= {2 + k % 2}",
            f"""SELECT m.id FROM members m
                JOIN (SELECT a.member_id FROM event_aggregates a WHERE {ag("training_completed")}
                      GROUP BY a.member_id HAVING sum(a.count) >= {2 + k % 2}) t ON t.member_id = m.id
                WHERE m.program_id = $1 AND m.kind = 'DEALER'""",
        ),
    ]
    assert len(defs) == 20
    return defs


def v2_metric_definitions() -> list[Definition]:
    """Condition language v2, the metric operands (issue 17): distinct, top, where tests, ledger operands,
    arithmetic. Each next to the hand-written SQL a person would write for it."""

    def ev(type_: str, days: int) -> str:
        return (
            f"e.program_id = $1 AND e.type = '{type_}' AND e.status = 'ACCEPTED' "
            f"AND e.occurred_at > $2 - interval '{days} days' AND e.occurred_at <= $2"
        )

    earned = """SELECT le.member_id FROM ledger_entries le
                LEFT JOIN events e ON e.id = le.event_id
                LEFT JOIN ledger_entries o ON o.id = le.reverses_entry_id
                WHERE le.program_id = $1 AND le.status = 'POSTED' AND le.kind NOT IN ('REDEMPTION', 'EXPIRY')
                  AND (o.id IS NULL OR o.kind NOT IN ('REDEMPTION', 'EXPIRY'))
                  AND coalesce(e.occurred_at, le.created_at) > $2 - interval '30 days'
                  AND coalesce(e.occurred_at, le.created_at) <= $2
                GROUP BY le.member_id HAVING sum(le.points) >= 500"""
    return [
        Definition(
            "v2_coffee_over_tea",
            'count(purchase, 90d where category = "coffee") > count(purchase, 90d where category = "tea")',
            f"""SELECT e.member_id FROM events e WHERE {ev("purchase", 90)}
                GROUP BY e.member_id
                HAVING count(*) FILTER (WHERE e.properties -> 'category' = '"coffee"')
                     > count(*) FILTER (WHERE e.properties -> 'category' = '"tea"')""",
        ),
        Definition(
            "v2_favourite_store",
            'top(purchase.storeId, 90d) = "s1"',
            f"""SELECT t.member_id FROM (
                  SELECT g.member_id, g.store,
                         row_number() OVER (PARTITION BY g.member_id
                                            ORDER BY g.n DESC, g.store COLLATE "C") AS rn
                  FROM (SELECT e.member_id, e.properties ->> 'storeId' AS store, count(*) AS n
                        FROM events e
                        WHERE {ev("purchase", 90)} AND jsonb_typeof(e.properties -> 'storeId') = 'string'
                        GROUP BY 1, 2) g) t
                WHERE t.rn = 1 AND t.store = 's1'""",
        ),
        Definition(
            "v2_store_explorer",
            "distinct(visit.storeId, 60d) >= 3",
            f"""SELECT e.member_id FROM events e WHERE {ev("visit", 60)}
                  AND jsonb_typeof(e.properties -> 'storeId') = 'string'
                GROUP BY e.member_id HAVING count(DISTINCT e.properties ->> 'storeId') >= 3""",
        ),
        Definition(
            "v2_not_coffee_or_tea",
            'count(purchase, 30d where category not in ["coffee", "tea"]) >= 2',
            f"""SELECT e.member_id FROM events e WHERE {ev("purchase", 30)}
                  AND jsonb_typeof(e.properties -> 'category') = 'string'
                  AND e.properties ->> 'category' NOT IN ('coffee', 'tea')
                GROUP BY e.member_id HAVING count(*) >= 2""",
        ),
        Definition(
            "v2_visits_per_purchase",
            "count(visit, 30d) / count(purchase, 30d) >= 0.5",
            """SELECT e.member_id FROM events e
                WHERE e.program_id = $1 AND e.type IN ('visit', 'purchase') AND e.status = 'ACCEPTED'
                  AND e.occurred_at > $2 - interval '30 days' AND e.occurred_at <= $2
                GROUP BY e.member_id
                HAVING count(*) FILTER (WHERE e.type = 'purchase') > 0
                   AND 2 * count(*) FILTER (WHERE e.type = 'visit')
                       >= count(*) FILTER (WHERE e.type = 'purchase')""",
        ),
        Definition("v2_earned_month", "points_earned(30d) >= 500", earned),
        Definition(
            "v2_spent_last_month",
            "points_redeemed(30d) > 0",
            """SELECT le.member_id FROM ledger_entries le
               LEFT JOIN ledger_entries o ON o.id = le.reverses_entry_id
               WHERE le.program_id = $1 AND le.status = 'POSTED'
                 AND (le.kind = 'REDEMPTION' OR (le.kind = 'REVERSAL' AND o.kind = 'REDEMPTION'))
                 AND coalesce(o.created_at, le.created_at) > $2 - interval '30 days'
                 AND coalesce(o.created_at, le.created_at) <= $2
               GROUP BY le.member_id HAVING -sum(le.points) > 0""",
        ),
        Definition(
            "v2_expiring_soon",
            "points_expiring(30d) > 0",
            """SELECT l.member_id FROM points_lots l
               WHERE l.program_id = $1 AND l.remaining > 0
                 AND l.expires_at > $2 AND l.expires_at <= $2 + interval '30 days'
               GROUP BY l.member_id HAVING sum(l.remaining) > 0""",
        ),
    ]


#: For the v2 ledger operands: a redemption for every 7th member, dated over the last 60 days, and
#: a lot (remaining = points, expiring 60 days after the event) for every 5th member's accruals.
V2_LEDGER_SQL = (
    """
INSERT INTO ledger_entries (program_id, member_id, points, status, kind, reason, event_id, idempotency_key,
                            request_hash, created_at)
SELECT $1, m.id, -50, 'POSTED', 'REDEMPTION', 'voucher', NULL, 'bench-redeem:' || m.id, md5(m.id::text),
       $2::timestamptz - make_interval(days => (m.id % 60)::int)
FROM members m WHERE m.program_id = $1 AND m.id % 7 = 0
""",
    """
INSERT INTO points_lots (program_id, member_id, entry_id, points, remaining, earned_at, expires_at)
SELECT le.program_id, le.member_id, le.id, le.points, le.points, e.occurred_at,
       e.occurred_at + interval '60 days'
FROM ledger_entries le JOIN events e ON e.id = le.event_id
WHERE le.program_id = $1 AND le.kind = 'ACCRUAL' AND le.member_id % 5 = 0 AND $2::timestamptz IS NOT NULL
""",
)


# ------------------------------------------------------------------------------------------ data

MEMBERS_SQL = """
INSERT INTO members (program_id, external_id, kind, organization_id, attributes, channels, joined_at,
                     created_at, updated_at, points_balance, pending_points)
SELECT $1, 'm' || lpad(g::text, 7, '0'),
       CASE WHEN g % 10 < 7 THEN 'CUSTOMER' WHEN g % 10 < 9 THEN 'DEALER' ELSE 'EMPLOYEE' END,
       CASE WHEN g % 10 >= 7 THEN $3::bigint + (g / 10) % $4 END,
       jsonb_build_object(
           'city', ($5::text[])[1 + g % array_length($5::text[], 1)],
           'device', jsonb_build_object(
               'os', CASE WHEN g % 3 = 0 THEN 'iOS' ELSE 'Android' END,
               'appVersion', (ARRAY['4.2', '4.9', '5.0', '5.3', '6.1', '6.4'])[1 + (g / 3) % 6])),
       '["EMAIL"]'::jsonb,
       $2::timestamptz - make_interval(days => 1 + g % 400),
       $2::timestamptz - make_interval(days => 1 + g % 400), $2, 0, 0
FROM generate_series(0, $6 - 1) AS g
ORDER BY g
"""

#: Member index i (0-based, id = first id + i): kind by i % 10 (0-6 customers, 7-8 dealers,
#: 9 employees); a tenth of the members (the regulars, i < N/10) produce 40% of the events of the
#: kind they can produce; sales and trainings come from dealers, suggestions from employees.
EVENTS_SQL = """
INSERT INTO events (program_id, external_id, member_id, type, occurred_at, amount, properties,
                    status, points_awarded, message, content_hash, received_at)
SELECT $1, 'e' || g, $3::bigint + idx, type,
       date_trunc('milliseconds', $2::timestamptz - interval '60 seconds' - r4 * interval '{days} days'),
       amount, properties, 'ACCEPTED',
       CASE type WHEN 'purchase' THEN amount / 10000 WHEN 'sale' THEN amount / 10000
                 WHEN 'visit' THEN 10 WHEN 'training_completed' THEN 50
                 WHEN 'suggestion_submitted' THEN 25 ELSE 0 END,
       NULL, md5(g::text) || md5('bench' || g::text), $2
FROM (
    SELECT g, type, r4,
           least($4 - 1, CASE
               WHEN type IN ('sale', 'training_completed') THEN
                   10 * floor(r3 * (CASE WHEN r2 < 0.4 THEN $4 / 100 ELSE $4 / 10 END))::bigint + 7 + g % 2
               WHEN type = 'suggestion_submitted' THEN
                   10 * floor(r3 * (CASE WHEN r2 < 0.4 THEN $4 / 100 ELSE $4 / 10 END))::bigint + 9
               ELSE floor(r3 * (CASE WHEN r2 < 0.4 THEN $4 / 10 ELSE $4 END))::bigint
           END) AS idx,
           CASE type WHEN 'purchase' THEN (500 + floor(r5 * 49500))::bigint * 100
                     WHEN 'sale' THEN (100000 + floor(r5 * 5900000))::bigint * 100 END AS amount,
           CASE type
               WHEN 'purchase' THEN jsonb_build_object(
                   'category', (ARRAY['coffee', 'tea', 'pastry', 'juice'])[1 + g % 4],
                   'storeId', 's' || g % 250)
               WHEN 'visit' THEN jsonb_build_object('storeId', 's' || g % 250)
               ELSE '{{}}'::jsonb END AS properties
    FROM (
        SELECT g, r2, r3, r4, r5,
               CASE WHEN r1 < 0.45 THEN 'purchase' WHEN r1 < 0.65 THEN 'visit' WHEN r1 < 0.85 THEN 'login'
                    WHEN r1 < 0.93 THEN 'sale' WHEN r1 < 0.96 THEN 'training_completed'
                    ELSE 'suggestion_submitted' END AS type
        FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5
              FROM generate_series(1, $5) AS g) raw
    ) typed
) shaped
"""

#: Login streaks: every 25th member logs in on each of the last 1..6 days (streak conditions
#: need consecutive days up to today, which uniform random logins almost never give).
STREAK_EVENTS_SQL = """
INSERT INTO events (program_id, external_id, member_id, type, occurred_at, amount, properties,
                    status, points_awarded, message, content_hash, received_at)
SELECT $1, 'streak-' || i || '-' || d, $3::bigint + i, 'login',
       date_trunc('milliseconds', $2::timestamptz - make_interval(days => d, mins => 1 + (i % 600))),
       NULL, '{}'::jsonb, 'ACCEPTED', 0, NULL, md5('s' || i || '-' || d) || md5('streak'), $2
FROM generate_series(0, $4 - 1, 25) AS i, generate_series(0, 5) AS d
WHERE d <= (i / 25) % 6
"""

AGGREGATES_SQL = """
INSERT INTO event_aggregates (member_id, event_type, day, program_id, count, amount_count, amount_sum,
                              amount_min, amount_max, first_at, last_at)
SELECT member_id, type, (occurred_at AT TIME ZONE 'UTC')::date, program_id, count(*), count(amount),
       coalesce(sum(amount), 0), min(amount), max(amount), min(occurred_at), max(occurred_at)
FROM events WHERE program_id = $1 AND status = 'ACCEPTED'
GROUP BY member_id, type, (occurred_at AT TIME ZONE 'UTC')::date, program_id
"""


#: One POSTED accrual per event that earned points, as `EventService.record_events` writes it.
LEDGER_SQL = """
INSERT INTO ledger_entries (program_id, member_id, points, status, kind, reason, event_id, idempotency_key,
                            request_hash, created_at)
SELECT program_id, member_id, points_awarded, 'POSTED', 'ACCRUAL', left(type || ' ' || external_id, 500), id,
       'event:' || external_id, content_hash, received_at
FROM events WHERE program_id = $1 AND status = 'ACCEPTED' AND points_awarded > 0
ORDER BY id
"""


def streak_event_count(members: int) -> int:
    return sum(1 + (i // 25) % 6 for i in range(0, members, 25))


async def drop_secondary_indexes(connection: Any, table: str) -> list[str]:
    """Drop `table`'s unique/foreign-key constraints and plain indexes (not the primary key);
    returns the statements that put them back. Bulk loads then build each index once."""
    restore: list[str] = []
    for name, definition in await connection.fetch(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = $1::regclass AND contype IN ('u', 'f') ORDER BY contype DESC",
        table,
    ):
        await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for name, definition in await connection.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1 AND indexname NOT IN "
        "(SELECT conname FROM pg_constraint WHERE conrelid = $1::regclass)",
        table,
    ):
        await connection.execute(f'DROP INDEX "{name}"')
        # a partitioned table's (migration 0018) reads `ON ONLY`: that would build no partition's index
        restore.append(definition.replace(" ON ONLY ", " ON ", 1))
    return restore


async def bare_copy(connection: asyncpg.Connection, program_id: int, now: datetime) -> int:
    """A program 'bare' with a copy of `program_id`'s members and no segments: the baseline's program."""
    bare_id: int = await connection.fetchval(
        "INSERT INTO programs (key, name, kind, settings, created_at) "
        "VALUES ('bare', 'No segments', 'B2C', '{}'::jsonb, $1) RETURNING id",
        now,
    )
    await connection.execute(
        "INSERT INTO members (program_id, external_id, kind, organization_id, attributes, channels, "
        "joined_at, created_at, updated_at, points_balance, pending_points) "
        "SELECT $2, external_id, kind, organization_id, attributes, channels, joined_at, created_at, "
        "updated_at, 0, 0 FROM members WHERE program_id = $1 ORDER BY id",
        program_id,
        bare_id,
    )
    return bare_id


async def generate(
    connection: Any, members: int, events: int, now: datetime, ledger: bool
) -> tuple[int, dict[str, float]]:
    """Program, organizations, members, events, aggregates, ledger accruals (if `ledger`), tags;
    returns the program id and timings."""
    timings: dict[str, float] = {}
    await connection.execute("SET maintenance_work_mem = '1GB'")
    await connection.execute("SET work_mem = '256MB'")
    program_id: int = await connection.fetchval(
        "INSERT INTO programs (key, name, kind, settings, created_at) "
        "VALUES ('bench', 'Bench', 'B2C', '{}'::jsonb, $1) RETURNING id",
        now,
    )
    await connection.execute(
        "INSERT INTO organizations (program_id, external_id, name, attributes, created_at) "
        "SELECT $1, 'org-' || lpad(g::text, 3, '0'), 'Org ' || g, '{}'::jsonb, $2 "
        "FROM generate_series(0, $3 - 1) g ORDER BY g",
        program_id,
        now,
        ORGANIZATIONS,
    )
    first_org: int = await connection.fetchval(
        "SELECT min(id) FROM organizations WHERE program_id = $1", program_id
    )

    started = time.perf_counter()
    await connection.execute(MEMBERS_SQL, program_id, now, first_org, ORGANIZATIONS, list(CITIES), members)
    first_member, last_member = await connection.fetchrow(
        "SELECT min(id), max(id) FROM members WHERE program_id = $1", program_id
    )
    if last_member - first_member + 1 != members:
        raise RuntimeError("member ids are not contiguous: the generator needs them to be")
    timings["members_s"] = time.perf_counter() - started
    log(f"{members:,} members in {timings['members_s']:.1f}s")

    streaks = streak_event_count(members)
    started = time.perf_counter()
    restore = await drop_secondary_indexes(connection, "events")
    await connection.execute("SET session_replication_role = replica")  # no per-row FK triggers
    await connection.execute(
        EVENTS_SQL.format(days=HISTORY_DAYS), program_id, now, first_member, members, max(0, events - streaks)
    )
    await connection.execute(STREAK_EVENTS_SQL, program_id, now, first_member, members)
    await connection.execute("SET session_replication_role = DEFAULT")
    timings["events_insert_s"] = time.perf_counter() - started
    log(f"{events:,} events inserted in {timings['events_insert_s']:.1f}s")
    started = time.perf_counter()
    for statement in restore:
        await connection.execute(statement)
    timings["events_indexes_s"] = time.perf_counter() - started
    log(f"events indexes and constraints rebuilt in {timings['events_indexes_s']:.1f}s")

    started = time.perf_counter()
    restore = await drop_secondary_indexes(connection, "event_aggregates")
    await connection.execute(AGGREGATES_SQL, program_id)
    for statement in restore:
        await connection.execute(statement)
    timings["aggregates_s"] = time.perf_counter() - started
    if ledger:
        started = time.perf_counter()
        restore = await drop_secondary_indexes(connection, "ledger_entries")
        await connection.execute("SET session_replication_role = replica")
        await connection.execute(LEDGER_SQL, program_id)
        await connection.execute("SET session_replication_role = DEFAULT")
        for statement in restore:
            await connection.execute(statement)
        timings["ledger_s"] = time.perf_counter() - started
        entries = await connection.fetchval("SELECT count(*) FROM ledger_entries")
        log(f"{entries:,} ledger accruals in {timings['ledger_s']:.1f}s")
    await connection.execute(
        "INSERT INTO member_tags (member_id, key, source, program_id, since) "
        "SELECT id, 'ambassador', 'manual', program_id, $2 FROM members "
        "WHERE program_id = $1 AND id % 97 = 0",
        program_id,
        now,
    )
    started = time.perf_counter()
    await connection.execute("ANALYZE")
    timings["analyze_s"] = time.perf_counter() - started
    buckets = await connection.fetchval("SELECT count(*) FROM event_aggregates")
    log(
        f"{buckets:,} aggregate buckets in {timings['aggregates_s']:.1f}s, "
        f"ANALYZE {timings['analyze_s']:.1f}s"
    )
    return program_id, {k: round(v, 2) for k, v in timings.items()}


async def create_segments(session: Any, program_id: int, defs: Sequence[Definition], now: datetime) -> None:
    for d in defs:
        session.add(
            Segment(
                program_id=program_id,
                key=d.key,
                name=d.key,
                kind="DYNAMIC",
                condition=condition_to_json(parse_rule(d.rule)),
                applies_tag=None,
                created_at=now,
                updated_at=now,
            )
        )
    await session.flush()


# ------------------------------------------------------------------------------------ batch phase

FLOOR_TABLES = """
CREATE TABLE floor_memberships (LIKE segment_memberships INCLUDING DEFAULTS INCLUDING INDEXES);
CREATE TABLE floor_changes (LIKE segment_changes INCLUDING DEFAULTS INCLUDING INDEXES INCLUDING IDENTITY);
ALTER TABLE floor_memberships ADD FOREIGN KEY (program_id) REFERENCES programs (id),
                              ADD FOREIGN KEY (segment_id) REFERENCES segments (id) ON DELETE CASCADE,
                              ADD FOREIGN KEY (member_id) REFERENCES members (id);
ALTER TABLE floor_changes ADD FOREIGN KEY (program_id) REFERENCES programs (id),
                          ADD FOREIGN KEY (segment_id) REFERENCES segments (id) ON DELETE CASCADE,
                          ADD FOREIGN KEY (member_id) REFERENCES members (id);
"""


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def recompute_engine(
    db: Database,
    program_id: int,
    now: datetime,
    statement_timeout_s: int | None = None,
    keys: Sequence[str] | None = None,
) -> tuple[float, dict[str, float], dict[str, Recomputed]]:
    per: dict[str, float] = {}
    mark = time.perf_counter()

    def progress(key: str, done: Recomputed) -> None:
        nonlocal mark
        t = time.perf_counter()
        per[key] = t - mark
        mark = t
        log(f"engine {key}: {per[key]:.2f}s, {done.entered:,} entered")

    started = time.perf_counter()
    async with db.unit_of_work() as uow:
        if statement_timeout_s is not None:
            await uow.session.execute(text(f"SET LOCAL statement_timeout = '{statement_timeout_s}s'"))
        done = await SegmentEngine().recompute(uow.session, program_id, keys, now, progress)
        mark_commit = time.perf_counter()
    total = time.perf_counter() - started
    log(f"engine: {total:.2f}s for {len(done)} segments (commit {time.perf_counter() - mark_commit:.2f}s)")
    return total, per, done


def floor_sql(d: Definition, segment_ids: dict[str, int]) -> str:
    sql = d.floor.replace("$2", "$2::timestamptz")
    for key, segment_id in segment_ids.items():
        sql = sql.replace(f"{{seg:{key}}}", str(segment_id))
    return sql


async def recompute_floor(
    connection: Any, program_id: int, defs: Sequence[Definition], segment_ids: dict[str, int], now: datetime
) -> tuple[float, dict[str, float]]:
    """Per definition: ids into a temp table, then membership rows and ENTERED log rows from it."""
    per: dict[str, float] = {}
    started = time.perf_counter()
    async with connection.transaction():
        for d in defs:
            t0 = time.perf_counter()
            segment_id = segment_ids[d.key]
            await connection.execute(
                "CREATE TEMPORARY TABLE floor_eval (member_id BIGINT PRIMARY KEY) ON COMMIT DROP"
            )
            await connection.execute(
                "INSERT INTO floor_eval (member_id) SELECT DISTINCT x.member_id "
                f"FROM ({floor_sql(d, segment_ids)}) AS x(member_id) "
                "WHERE $1::bigint IS NOT NULL AND $2::timestamptz IS NOT NULL",
                program_id,
                now,
            )
            await connection.execute(
                "INSERT INTO floor_changes (program_id, segment_id, member_id, change, at) "
                "SELECT $1, $2, member_id, 'ENTERED', $3 FROM floor_eval",
                program_id,
                segment_id,
                now,
            )
            await connection.execute(
                "INSERT INTO floor_memberships (program_id, segment_id, member_id, since) "
                "SELECT $1, $2, member_id, $3 FROM floor_eval",
                program_id,
                segment_id,
                now,
            )
            await connection.execute("DROP TABLE floor_eval")
            per[d.key] = time.perf_counter() - t0
            log(f"floor {d.key}: {per[d.key]:.2f}s")
    total = time.perf_counter() - started
    log(f"floor: {total:.2f}s for {len(defs)} definitions")
    return total, per


async def compare_sets(connection: Any, segment_ids: dict[str, int]) -> dict[str, dict[str, int]]:
    rows = await connection.fetch(
        """
        SELECT s.id, coalesce(e.n, 0) AS engine, coalesce(f.n, 0) AS floor,
               (SELECT count(*) FROM (
                   (SELECT member_id FROM segment_memberships WHERE segment_id = s.id
                    EXCEPT SELECT member_id FROM floor_memberships WHERE segment_id = s.id)
                   UNION ALL
                   (SELECT member_id FROM floor_memberships WHERE segment_id = s.id
                    EXCEPT SELECT member_id FROM segment_memberships WHERE segment_id = s.id)) d) AS differ
        FROM unnest($1::bigint[]) AS s(id)
        LEFT JOIN (SELECT segment_id, count(*) n FROM segment_memberships GROUP BY 1) e ON e.segment_id = s.id
        LEFT JOIN (SELECT segment_id, count(*) n FROM floor_memberships GROUP BY 1) f ON f.segment_id = s.id
        """,
        list(segment_ids.values()),
    )
    by_id = {v: k for k, v in segment_ids.items()}
    return {by_id[r["id"]]: {"engine": r["engine"], "floor": r["floor"], "differ": r["differ"]} for r in rows}


async def explain_engine(db: Database, program_id: int, key: str, now: datetime) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the engine's compiled SELECT for one segment (rolled back)."""
    engine = SegmentEngine()
    async with db.sessions() as session, session.begin():
        index = await engine.index(session, program_id)
        definition = index.by_key()[key]
        assert definition.condition is not None
        compilation = Compilation("postgresql", program_id, now, {d.key: d.id for d in index.ordered})
        statement = compilation.members_where(definition.condition)
        compiled = statement.compile(dialect=db.engine.dialect, compile_kwargs={"render_postcompile": True})
        processors: dict[str, Any] = dict(compiled._bind_processors)
        params = []
        for name in compiled.positiontup or ():
            value = compiled.params[name]
            processor = processors.get(name)
            params.append(processor(value) if processor else value)
        raw = await (await session.connection()).get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        rows = await driver.fetch("EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), *params)
        await session.rollback()
    return "\n".join(r[0] for r in rows)


async def explain_floor(
    connection: Any, d: Definition, segment_ids: dict[str, int], program_id: int, now: datetime
) -> str:
    rows = await connection.fetch(
        f"EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM ({floor_sql(d, segment_ids)}) x "
        "WHERE $1::bigint IS NOT NULL AND $2::timestamptz IS NOT NULL",
        program_id,
        now,
    )
    return "\n".join(r[0] for r in rows)


# ------------------------------------------------------------------------------ incremental phase


def pick_type(rng: random.Random) -> str:
    roll = rng.random()
    for name, share in MIX:
        roll -= share
        if roll < 0:
            return name
    return MIX[-1][0]


async def incremental(
    db: Database, program_id: int, sample: Sequence[tuple[int, str]], now: datetime, warm: bool
) -> list[float]:
    """members_changed for one member and one event type at a time; ms per call."""
    engine = SegmentEngine()
    if warm:  # bring the sampled members' memberships of segments never recomputed to steady state
        for member_id, _ in sample:
            async with db.unit_of_work() as uow:
                await engine.members_changed(
                    uow.session, MembersChanged(program_id, created=frozenset({member_id})), now
                )
    else:  # parse the definitions once, as a running server has
        async with db.unit_of_work() as uow:
            await engine.index(uow.session, program_id)
    return [
        await timed_change(db, engine, program_id, member_id, event_type, now)
        for member_id, event_type in sample
    ]


async def timed_change(
    db: Database, engine: SegmentEngine, program_id: int, member_id: int, event_type: str, now: datetime
) -> float:
    """One members_changed call in its own unit of work; ms for the call alone."""
    async with db.unit_of_work() as uow:
        t0 = time.perf_counter()
        await engine.members_changed(
            uow.session, MembersChanged(program_id, {member_id: frozenset({event_type})}), now
        )
        return (time.perf_counter() - t0) * 1000


# ------------------------------------------------------------------------------ refund filter phase


def interleaved(i: int) -> tuple[bool, bool]:
    """The order of the two modes in round / call i: without first, then with first (ABBA...)."""
    return (False, True) if i % 2 == 0 else (True, False)


async def refund_filter_batch(
    db: Database, program_id: int, now: datetime, rounds: int, timeout_s: int
) -> dict[bool, list[tuple[float, float]]]:
    """Per mode (filter on / off), per round: the 20 recomputed from empty segments, then again full.

    The memberships and the change log are truncated before each first pass, so both modes write
    the same rows; the segments end full, as the batch phase left them.
    """
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(rounds):
        for enabled in interleaved(i):
            async with db.unit_of_work() as uow:
                await uow.session.execute(text("TRUNCATE segment_memberships, segment_changes"))
            label = "with" if enabled else "without"
            with refund_filter(enabled):
                first, _, _ = await recompute_engine(db, program_id, now, timeout_s)
                again, _, _ = await recompute_engine(db, program_id, now, timeout_s)
            runs[enabled].append((first, again))
            log(f"refund filter round {i + 1}, {label}: recompute {first:.2f}s, again {again:.2f}s")
    return runs


async def refund_filter_incremental(
    db: Database, program_id: int, sample: Sequence[tuple[int, str]], now: datetime
) -> dict[bool, list[float]]:
    """Each sampled change timed with the filter on and off, the order alternating by call."""
    engine = SegmentEngine()
    async with db.unit_of_work() as uow:
        await engine.index(uow.session, program_id)
    timings: dict[bool, list[float]] = {True: [], False: []}
    for i, (member_id, event_type) in enumerate(sample):
        for enabled in interleaved(i):
            with refund_filter(enabled):
                timings[enabled].append(
                    await timed_change(db, engine, program_id, member_id, event_type, now)
                )
    return timings


def ratio(with_: float, without: float) -> float | None:
    return round(with_ / without, 3) if without else None


def incremental_figures(timings: dict[bool, list[float]], segments: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for q in (50, 99):
        on, off = percentile(timings[True], q), percentile(timings[False], q)
        figures[f"refund_filter_p{q}_ms_{segments}"] = {"with": round(on, 2), "without": round(off, 2)}
        figures[f"refund_filter_ratio_p{q}_{segments}"] = ratio(on, off)
        log(f"incremental, {segments} segments, p{q}: {on:.2f} ms with the refund filter, {off:.2f} without")
    return figures


# ----------------------------------------------------------------------------------- ingest phase


def ingest_drafts(rng: random.Random, members: int, count: int, run: str, now: datetime) -> list[EventDraft]:
    drafts = []
    for i in range(count):
        kind = pick_type(rng)
        if kind in ("sale", "training_completed"):
            index = 10 * rng.randrange(max(1, members // 10)) + 7 + i % 2
        elif kind == "suggestion_submitted":
            index = 10 * rng.randrange(max(1, members // 10)) + 9
        else:
            index = rng.randrange(members // 10) if rng.random() < 0.4 else rng.randrange(members)
        index = min(members - 1, index)
        amount: str | None = None
        properties: dict[str, Any] = {}
        if kind == "purchase":
            amount = str(Decimal(rng.randrange(500, 50_000)) / 100)
            properties = {"category": ("coffee", "tea", "pastry", "juice")[i % 4], "storeId": f"s{i % 250}"}
        elif kind == "sale":
            amount = str(Decimal(rng.randrange(100_000, 6_000_000)) / 100)
        elif kind == "visit":
            properties = {"storeId": f"s{i % 250}"}
        occurred = now - timedelta(seconds=60 + rng.uniform(0, HISTORY_DAYS * 86_400))
        occurred = occurred.replace(microsecond=occurred.microsecond // 1000 * 1000)
        drafts.append(EventDraft(f"ing-{run}-{i}", f"m{index:07d}", kind, occurred, amount, properties))
    return drafts


async def ingest(service: EventService, program_id: int, drafts: Sequence[EventDraft], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(drafts), batch):
        outcomes = await service.record_events(program_id, drafts[start : start + batch])
        bad = [o for o in outcomes if o.status.value != "ACCEPTED"]
        if bad:
            raise RuntimeError(f"ingest: {len(bad)} events not accepted, e.g. {bad[0]}")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------ main


@dataclass(frozen=True)
class Options:
    members: int
    events: int
    sample: int
    ingest_events: int
    batch: int
    database_url: str
    quick: bool
    keep: bool
    ledger: bool
    refund_rounds: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--members", type=int, help="members (default 1,000,000; --quick 20,000)")
    parser.add_argument(
        "--events", type=int, help="events over 120 days (default 10,000,000; --quick 200,000)"
    )
    parser.add_argument(
        "--sample", type=int, help="members sampled for the incremental phase (2,000; --quick 300)"
    )
    parser.add_argument("--ingest-events", type=int, help="events per ingest run (20,000; --quick 5,000)")
    parser.add_argument("--batch", type=int, default=500, help="events per record_events call")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="the PostgreSQL server to create the fresh bench database on",
    )
    parser.add_argument("--quick", action="store_true", help="20k members / 200k events, same code path")
    parser.add_argument("--keep", action="store_true", help="do not drop the database (for EXPLAIN by hand)")
    parser.add_argument(
        "--no-ledger", action="store_true", help="no accrual rows for the generated events (empty ledger)"
    )
    parser.add_argument(
        "--refund-rounds",
        type=int,
        default=2,
        help="recompute rounds with and without the refund filter (2: without/with, with/without; 0: skip)",
    )
    args = parser.parse_args(argv)
    members = args.members or (20_000 if args.quick else 1_000_000)
    events = args.events or (200_000 if args.quick else 10_000_000)
    sample = args.sample or (300 if args.quick else 2_000)
    ingest_events = args.ingest_events or (5_000 if args.quick else 20_000)
    if members < 100 or events < 1 or not 1 <= args.batch <= 1000 or args.refund_rounds < 0:
        parser.error("--members >= 100, --events >= 1, --batch between 1 and 1000, --refund-rounds >= 0")
    return Options(
        members,
        events,
        sample,
        ingest_events,
        args.batch,
        args.database_url,
        args.quick,
        args.keep,
        ledger=not args.no_ledger,
        refund_rounds=args.refund_rounds,
    )


async def run(options: Options) -> dict[str, Any]:
    server = make_url(options.database_url).set(drivername="postgresql+asyncpg")
    name = f"loyalty_bench_seg_{secrets.token_hex(4)}"
    url = server.set(database=name).render_as_string(hide_password=False)

    async def connect(database: str) -> Any:
        return await asyncpg.connect(
            host=server.host or "127.0.0.1",
            port=server.port or 5432,
            user=server.username or "postgres",
            password=server.password,
            database=database,
        )

    admin = await connect("postgres")
    try:
        autovacuum = bool(await admin.fetchval("SELECT current_setting('autovacuum')::boolean"))
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    log(f"database {name}; {options.members:,} members, {options.events:,} events; autovacuum {autovacuum}")
    figures: dict[str, Any] = {"bench": "segments", "quick": options.quick}
    db: Database | None = None
    try:
        await asyncio.to_thread(migrations.upgrade, url)
        now = datetime.now(UTC).replace(microsecond=0)
        connection = await connect(name)
        try:
            started = time.perf_counter()
            program_id, timings = await generate(
                connection, options.members, options.events, now, options.ledger
            )
            figures["generate_s"] = round(time.perf_counter() - started, 1)
            figures["generate"] = timings
            events_total = await connection.fetchval("SELECT count(*) FROM events")
            figures["members"] = options.members
            figures["events"] = events_total
            figures["aggregate_buckets"] = await connection.fetchval("SELECT count(*) FROM event_aggregates")
            figures["ledger_entries"] = await connection.fetchval("SELECT count(*) FROM ledger_entries")
            await connection.execute(FLOOR_TABLES)
        finally:
            await connection.close()

        db = Database(create_engine(url, pool_size=2))
        base = definitions(0)
        async with db.unit_of_work() as uow:
            await create_segments(uow.session, program_id, base, now)
        async with db.read() as session:
            segment_ids = dict(
                (
                    await session.execute(
                        select(Segment.key, Segment.id).where(Segment.program_id == program_id)
                    )
                ).all()
            )

        # ---- batch: engine first (the floor then runs on the same warm cache), then the floor
        engine_s, engine_per, _ = await recompute_engine(db, program_id, now)
        connection = await connect(name)
        try:
            floor_s, floor_per = await recompute_floor(connection, program_id, base, segment_ids, now)
            sets = await compare_sets(connection, {d.key: segment_ids[d.key] for d in base})
        finally:
            await connection.close()
        mismatched = {k: v for k, v in sets.items() if v["differ"]}
        if mismatched:
            log("!" * 80)
            log(f"MISMATCH between the engine and the hand-written SQL: {mismatched}")
            log("!" * 80)
        slowest = max(engine_per, key=lambda k: engine_per[k])
        # the same recompute again, now that every segment is full (the steady state of a refresh)
        timeout = 60 if options.quick else 300
        try:
            again_s, again_per, again = await recompute_engine(db, program_id, now, timeout)
            figures["recompute_again_s"] = round(again_s, 2)
            figures["recompute_again_changes"] = sum(r.entered + r.left for r in again.values())
            figures["recompute_again_per_definition"] = {k: round(v, 3) for k, v in again_per.items()}
        except DBAPIError as error:
            log(f"second recompute failed (statement_timeout {timeout}s): {str(error).splitlines()[0]}")
            figures["recompute_again_s"] = None
            figures["recompute_again_error"] = f"statement_timeout {timeout}s: {str(error).splitlines()[0]}"
        figures.update(
            recompute_s=round(engine_s, 2),
            floor_s=round(floor_s, 2),
            ratio=round(engine_s / floor_s, 2) if floor_s else None,
            per_definition={
                d.key: {
                    "engine_s": round(engine_per.get(d.key, 0.0), 3),
                    "floor_s": round(floor_per[d.key], 3),
                    "members": sets[d.key]["engine"],
                    "floor_members": sets[d.key]["floor"],
                    "differ": sets[d.key]["differ"],
                }
                for d in base
            },
            sets_equal=not mismatched,
            slowest_definition=slowest,
        )
        log(f"recompute: engine {engine_s:.2f}s, floor {floor_s:.2f}s, ratio {figures['ratio']}")
        plan = await explain_engine(db, program_id, slowest, now)
        sys.stderr.write(f"EXPLAIN ANALYZE (engine) {slowest}:\n{plan}\n")
        connection = await connect(name)
        try:
            floor_plan = await explain_floor(
                connection, next(d for d in base if d.key == slowest), segment_ids, program_id, now
            )
        finally:
            await connection.close()
        sys.stderr.write(f"EXPLAIN ANALYZE (floor) {slowest}:\n{floor_plan}\n")

        # ---- the refund filter: the same recompute with and without it
        if options.refund_rounds:
            probed = "big_spender"  # a windowed sum: a GROUP BY over raw events
            plans = {}
            for enabled in (True, False):
                with refund_filter(enabled):
                    plans[enabled] = await explain_engine(db, program_id, probed, now)
                sys.stderr.write(
                    f"EXPLAIN ANALYZE (engine, refund filter {'on' if enabled else 'off'}) {probed}:\n"
                    f"{plans[enabled]}\n"
                )
            if "ledger_entries" not in plans[True] or "ledger_entries" in plans[False]:
                raise RuntimeError("refund_filter(False) did not take the refund probe out of the SQL")
            runs = await refund_filter_batch(db, program_id, now, options.refund_rounds, timeout)
            best = {mode: (min(r[0] for r in runs[mode]), min(r[1] for r in runs[mode])) for mode in runs}
            figures.update(
                refund_filter_rounds=options.refund_rounds,
                refund_filter_batch_s={
                    "with": [round(r[0], 2) for r in runs[True]],
                    "without": [round(r[0], 2) for r in runs[False]],
                },
                refund_filter_batch_again_s={
                    "with": [round(r[1], 2) for r in runs[True]],
                    "without": [round(r[1], 2) for r in runs[False]],
                },
                refund_filter_ratio_batch=ratio(best[True][0], best[False][0]),
                refund_filter_ratio_batch_again=ratio(best[True][1], best[False][1]),
            )
            log(
                f"refund filter, best of {options.refund_rounds}: recompute {best[True][0]:.2f}s with, "
                f"{best[False][0]:.2f}s without ({figures['refund_filter_ratio_batch']}); again "
                f"{best[True][1]:.2f}s / {best[False][1]:.2f}s ({figures['refund_filter_ratio_batch_again']})"
            )

        # ---- incremental, 20 segments then 200
        rng = random.Random(20_240_601)
        async with db.read() as session:
            first = (await session.execute(text("SELECT min(id) FROM members"))).scalar_one()
        sample = [
            (
                first
                + (
                    rng.randrange(options.members // 10)
                    if rng.random() < 0.4
                    else rng.randrange(options.members)
                ),
                pick_type(rng),
            )
            for _ in range(options.sample)
        ]
        t20 = await incremental(db, program_id, sample, now, warm=False)
        log(f"incremental, 20 segments: p50 {percentile(t20, 50):.2f} ms, p99 {percentile(t20, 99):.2f} ms")
        if options.refund_rounds:
            figures.update(
                incremental_figures(await refund_filter_incremental(db, program_id, sample, now), 20)
            )
        async with db.unit_of_work() as uow:
            await create_segments(
                uow.session, program_id, [d for k in range(1, 10) for d in definitions(k)], now
            )
        t200 = await incremental(db, program_id, sample, now, warm=True)
        log(
            f"incremental, 200 segments: p50 {percentile(t200, 50):.2f} ms, p99 {percentile(t200, 99):.2f} ms"
        )
        if options.refund_rounds:
            figures.update(
                incremental_figures(await refund_filter_incremental(db, program_id, sample, now), 200)
            )
        figures.update(
            incremental_sample=len(sample),
            incremental_p50_ms_20=round(percentile(t20, 50), 2),
            incremental_p99_ms_20=round(percentile(t20, 99), 2),
            incremental_p50_ms_200=round(percentile(t200, 50), 2),
            incremental_p99_ms_200=round(percentile(t200, 99), 2),
        )
        async with db.unit_of_work() as uow:  # back to the 20 (memberships cascade)
            await uow.session.execute(
                text("DELETE FROM segments WHERE program_id = :p AND NOT (key = ANY(:keys))"),
                {"p": program_id, "keys": [d.key for d in base]},
            )

        # ---- condition language v2, the metric operands: their own batch next to hand-written SQL
        figures["v2_metrics"] = await v2_metrics_phase(db, connect, name, program_id, now)

        # ---- ingest: a second program with a copy of the members and no segments, then the real one
        connection = await connect(name)
        try:
            bare_id = await bare_copy(connection, program_id, now)
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        clock = SystemClock()
        drafts_rng = random.Random(7)
        ingest_now = datetime.now(UTC)
        none_drafts = ingest_drafts(drafts_rng, options.members, options.ingest_events, "bare", ingest_now)
        with_drafts = [
            EventDraft(
                d.external_id.replace("bare", "seg"),
                d.member_external_id,
                d.type,
                d.occurred_at,
                d.amount,
                d.properties,
            )
            for d in none_drafts
        ]
        db.bus.handle(MembersChanged, SegmentEngine().handle)  # segments evaluated in the pipeline
        service = EventService(db, clock, AllowAll())
        none_s = await ingest(service, bare_id, none_drafts, options.batch)
        log(f"ingest, no segments: {len(none_drafts) / none_s:,.0f} events/s ({none_s:.1f}s)")
        with_s = await ingest(service, program_id, with_drafts, options.batch)
        log(f"ingest, 20 segments: {len(with_drafts) / with_s:,.0f} events/s ({with_s:.1f}s)")
        figures.update(
            ingest_events=len(with_drafts),
            ingest_batch=options.batch,
            ingest_events_per_s_20_segments=round(len(with_drafts) / with_s),
            ingest_events_per_s_no_segments=round(len(none_drafts) / none_s),
        )
    finally:
        if db is not None:
            await db.dispose()
        if not options.keep:
            admin = await connect("postgres")
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
            log(f"dropped {name}")
    return figures


async def v2_metrics_phase(
    db: Database, connect: Any, name: str, program_id: int, now: datetime
) -> dict[str, Any]:
    """The v2 metric definitions recomputed by the engine (their keys only) next to the floor, on the
    same data plus redemptions and expiry lots; the segments are dropped afterwards."""
    defs = v2_metric_definitions()
    connection = await connect(name)
    try:
        for statement in V2_LEDGER_SQL:
            await connection.execute(statement, program_id, now)
        await connection.execute("ANALYZE ledger_entries; ANALYZE points_lots")
    finally:
        await connection.close()
    async with db.unit_of_work() as uow:
        await create_segments(uow.session, program_id, defs, now)
    async with db.read() as session:
        rows = await session.execute(select(Segment.key, Segment.id).where(Segment.program_id == program_id))
        segment_ids: dict[str, int] = dict(rows.tuples().all())
    keys = [d.key for d in defs]
    engine_s, engine_per, _ = await recompute_engine(db, program_id, now, keys=keys)
    connection = await connect(name)
    try:
        floor_s, floor_per = await recompute_floor(connection, program_id, defs, segment_ids, now)
        sets = await compare_sets(connection, {k: segment_ids[k] for k in keys})
        await connection.execute(
            "DELETE FROM segments WHERE program_id = $1 AND key = ANY($2)", program_id, keys
        )
    finally:
        await connection.close()
    mismatched = {k: v for k, v in sets.items() if v["differ"]}
    if mismatched:
        log("!" * 80)
        log(f"MISMATCH between the engine and the hand-written SQL (v2 metrics): {mismatched}")
        log("!" * 80)
    log(f"v2 metrics: engine {engine_s:.2f}s, floor {floor_s:.2f}s, ratio {engine_s / floor_s:.2f}")
    return {
        "recompute_s": round(engine_s, 2),
        "floor_s": round(floor_s, 2),
        "ratio": round(engine_s / floor_s, 2) if floor_s else None,
        "sets_equal": not mismatched,
        "per_definition": {
            d.key: {
                "engine_s": round(engine_per.get(d.key, 0.0), 3),
                "floor_s": round(floor_per[d.key], 3),
                "members": sets[d.key]["engine"],
                "differ": sets[d.key]["differ"],
            }
            for d in defs
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    figures = asyncio.run(run(options))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0 if figures.get("sets_equal") else 1


if __name__ == "__main__":
    sys.exit(main())
