"""Organization roll-up fan-out (issue 17): what one `org.AGG` segment costs the accrual pipeline.

An event of one member re-evaluates the org-scoped segments of every member of its
organization and of the organizations above it (`domain/segments/fanout.py`). This bench
measures that in-process, on a fresh PostgreSQL database: dealer groups > dealers >
branches (default 20 x 5 x 2 = 320 organizations), members spread evenly over them, and
`recordEvents` batches of sales, visits and purchases through `EventService`, in two
programs that differ only by one segment:

* "v1": 20 DYNAMIC segments without roll-ups (the shapes of bench/pipeline.py's);
* "org": the same, with the 20th replaced by "dealer group over target"
  (`kind = DEALER and org.sum(sale.amount, 90d) > 1000000`).

Reports events/s per program, the org / v1 ratio, and the fan-out: in-memory evaluations
per event (one per member and segment) and members re-evaluated for the roll-up per sale.
`--quick`: 2,000 members, 4,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from domain.governance.audit_log import SYSTEM

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.runtime import Services, build_services
from bench.harness import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, AutoAnalyze, PgServer, analyze, log
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert, OrganizationUpsert
from domain.ops.metrics import SEGMENT_EVALUATIONS
from domain.programs.service import ProgramSettings
from domain.segments.service import SegmentDraft
from domain.settings import Settings

RULES = (
    "sum(purchase.amount, 365d) < 100",
    "sum(purchase.amount, 365d) >= 100 and sum(purchase.amount, 365d) < 300",
    "sum(purchase.amount, 365d) >= 300",
    "count(visit, 30d) >= 25 and avg(purchase.amount, 30d) >= 400",
    "count(visit, 30d) > 10 and avg(purchase.amount, 30d) >= 200",
    "count(purchase) = 1 and days_since_first(purchase) >= 7",
    "days_since_last(purchase) >= 20 and days_since_last(purchase) < 40",
    "days_since_last(purchase) >= 40",
    "streak(visit) >= 3",
    'count(purchase, 90d where category = "coffee") >= 3',
    "sum(sale.amount, 90d) > 100000",
    "count(sale, 30d) >= 5",
    "kind = DEALER and sum(sale.amount, 90d) > 5000",
    "sum(purchase.amount, 30d) >= 150",
    "sum(purchase.amount, 90d) >= 400",
    "distinct_days(visit, 30d) >= 3",
    'city in ["c01", "c02", "c03"] and count(visit, 30d) >= 2',
    'city = "c07"',
    "max(sale.amount, 90d) >= 400",
    "count(sale, 90d) >= 1",
)
ROLL_UP = "kind = DEALER and org.sum(sale.amount, 90d) > 1000000"


def organizations(groups: int, dealers: int, branches: int) -> list[OrganizationUpsert]:
    """Groups, then their dealers, then the dealers' branches: each parent comes first."""
    found = [OrganizationUpsert(f"g{g}", f"Group {g}", sets_parent=True) for g in range(groups)]
    for g in range(groups):
        for d in range(dealers):
            found.append(OrganizationUpsert(f"g{g}d{d}", f"Dealer {g}.{d}", None, f"g{g}", True))
            found += [
                OrganizationUpsert(f"g{g}d{d}b{b}", f"Branch {g}.{d}.{b}", None, f"g{g}d{d}", True)
                for b in range(branches)
            ]
    return found


async def setup(services: Services, key: str, rules: Sequence[str], options: argparse.Namespace) -> int:
    program = await services.programs.create_program(key, key, "B2B", ProgramSettings())
    orgs = organizations(options.groups, options.dealers, options.branches)
    for start in range(0, len(orgs), 1000):
        await services.members.upsert_organizations(program.id, orgs[start : start + 1000])
    members = [
        MemberUpsert(
            f"m{i}",
            "DEALER",
            orgs[i % len(orgs)].external_id,
            {"city": f"c{i % 10:02d}"},
        )
        for i in range(options.members)
    ]
    for start in range(0, len(members), 1000):
        await services.members.upsert_members(program.id, members[start : start + 1000])
    for i, rule in enumerate(rules):
        await services.segments.create(
            program.id, SegmentDraft(f"s{i:02d}", f"s{i:02d}", "DYNAMIC", rule=rule), actor=SYSTEM
        )
    return program.id


def batches(options: argparse.Namespace, now: Any, seed: int) -> list[list[EventDraft]]:
    rng = random.Random(seed)
    drafts = []
    for n in range(options.events):
        member = rng.randrange(options.members)
        kind = rng.choice(("sale", "sale", "visit", "purchase"))
        amount = Decimal(rng.randrange(10, 500)) if kind != "visit" else None
        at = now - timedelta(seconds=rng.randrange(60 * 86_400))
        properties = {"category": rng.choice(("coffee", "tea", "cake"))} if kind == "purchase" else {}
        drafts.append(EventDraft(f"e{n}", f"m{member}", kind, at, amount, properties))
    return [drafts[i : i + options.batch] for i in range(0, len(drafts), options.batch)]


def evaluations() -> float:
    return float(SEGMENT_EVALUATIONS.labels("memory")._value.get())


async def phase(
    services: Services, label: str, program_id: int, options: argparse.Namespace
) -> dict[str, Any]:
    work = batches(options, services.clock.now(), seed=7)
    before = evaluations()
    started = time.perf_counter()
    for batch in work:
        outcomes = await services.events.record_events(program_id, batch)
        assert all(o.status == "ACCEPTED" for o in outcomes), {o.status for o in outcomes}
    seconds = time.perf_counter() - started
    evaluated = evaluations() - before
    figures = {
        "events_per_s": round(options.events / seconds),
        "seconds": round(seconds, 2),
        "evaluations_per_event": round(evaluated / options.events, 2),
    }
    log(f"{label}: {figures}")
    return figures


async def run(options: argparse.Namespace) -> dict[str, Any]:
    pg = PgServer.parse(options.database_url)
    name = f"bench_orgs_{secrets.token_hex(4)}"
    url = await pg.create(name)
    settings = Settings(
        database_url=url,
        redis_url=options.redis_url,
        redis_prefix=f"bench-orgs:{name}:",
        secret_key=secrets.token_urlsafe(48),
    )
    services = build_services(settings)
    try:
        v1 = await setup(services, "v1", RULES, options)
        org = await setup(services, "org", [*RULES[:-1], ROLL_UP], options)
        await analyze(pg, name)  # the planner's statistics of the set-up
        orgs = options.groups * (1 + options.dealers * (1 + options.branches))
        per_org = options.members / orgs
        results: dict[str, Any] = {
            "members": options.members,
            "organizations": orgs,
            "events": options.events,
            # a branch's sale reaches its branch, dealer and group; a dealer's, its dealer and group
            "members_reached_per_sale": round(
                per_org * (options.branches * 3 + 2 + 1) / (options.branches + 1 + 1 / options.dealers), 1
            ),
        }
        # autovacuum's ANALYZE, as bench/pipeline.py runs it (the dev PostgreSQL runs without it)
        for label, key, program_id in (
            ("20 segments, no roll-up", "v1", v1),
            ("20 segments, one org.sum roll-up", "org", org),
        ):
            analyzer = AutoAnalyze(pg, name)
            analyzer.start()
            try:
                results[key] = await phase(services, label, program_id, options)
            finally:
                results[key].update(await analyzer.stop())
        results["org_over_v1"] = round(results["v1"]["events_per_s"] / results["org"]["events_per_s"], 2)
        log(f"org / v1 time ratio: {results['org_over_v1']}")
        return results
    finally:
        await services.close()
        await pg.drop(name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--dealers", type=int, default=5, help="dealers per group")
    parser.add_argument("--branches", type=int, default=2, help="branches per dealer")
    parser.add_argument("--quick", action="store_true", help="2,000 members, 4,000 events")
    parser.add_argument(
        "--database-url", default=os.environ.get("LOYALTY_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    parser.add_argument("--redis-url", default=os.environ.get("LOYALTY_BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    options = parser.parse_args(argv)
    if options.quick:
        options.members, options.events = 2_000, 4_000
    print(asyncio.run(run(options)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
