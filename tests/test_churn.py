"""Churn prediction on a generated program with a planted churn pattern (docs/analytics.md).

Given members whose daily purchases follow a Poisson rate that, for some of them,
decays from a random day on, the true probability of "no purchase in the 7 days
after a cutoff" is exp(-sum of the next 7 days' rates). The model, which sees only
the daily aggregates, must rank the holdout nearly as well as that planted truth.
"""

from __future__ import annotations

import asyncio
import math
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.runtime import Services
from domain.db.engine import Database, create_engine
from domain.errors import InvalidInput
from domain.models import EventAggregate, Member
from domain.predict.features import FEATURES, HORIZON_DAYS
from domain.predict.model import PredictionUnavailable, fit
from domain.segments.evaluate import Evaluation
from domain.segments.facts import Needs, load_facts
from domain.segments.rules import parse_rule
from domain.segments.service import SegmentDraft
from tests.support.cli import BIN, cli_environment, loyalty, ok
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture

HISTORY_DAYS = 150
UNITS = 10_000


@dataclass
class Planted:
    """A generated member: its daily purchase rate (the planted truth) and the purchases drawn from it."""

    external_id: str
    joined_at: datetime
    rates: dict[date, float]
    counts: dict[date, int] = field(default_factory=dict)

    def churn_probability(self, cutoff: date) -> float:
        return math.exp(-sum(self.rates[cutoff + timedelta(days=k)] for k in range(HORIZON_DAYS)))

    def eligible(self, cutoff: date) -> bool:
        joined = self.joined_at < datetime.combine(cutoff, time(), tzinfo=UTC)
        return joined and any(day < cutoff for day in self.counts)

    def churned(self, cutoff: date) -> bool:
        return not any(self.counts.get(cutoff + timedelta(days=k)) for k in range(HORIZON_DAYS))


def _poisson(rng: random.Random, rate: float) -> int:
    limit, k, product = math.exp(-rate), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def plant(now: datetime, members: int, seed: int = 7, decliners: float = 0.6) -> list[Planted]:
    """Histories of HISTORY_DAYS days up to today; `decliners` of the members fade away from a random day."""
    rng = random.Random(seed)
    today = now.date()
    planted: list[Planted] = []
    for n in range(members):
        base = rng.uniform(0.15, 0.9)
        fades_from = rng.uniform(0, HISTORY_DAYS + 30) if rng.random() < decliners else None
        tau = rng.uniform(4, 15)
        member = Planted(f"c{n}", now - timedelta(days=HISTORY_DAYS + rng.randint(1, 30)), {})
        for d in range(HISTORY_DAYS + HORIZON_DAYS + 2):  # rates a little past today: the label's future
            day = today - timedelta(days=HISTORY_DAYS) + timedelta(days=d)
            faded = 0.0 if fades_from is None or d < fades_from else (d - fades_from) / tau
            member.rates[day] = base * math.exp(-faded)
            if day <= today and (count := _poisson(rng, member.rates[day])):
                member.counts[day] = count
        planted.append(member)
    return planted


async def insert_history(
    session: AsyncSession, program_id: int, planted: list[Planted], now: datetime
) -> None:
    """Members and their daily purchase buckets, in bulk (the model reads only the aggregates)."""
    members = cast(Table, Member.__table__)
    await session.execute(
        insert(members),
        [
            {
                "program_id": program_id,
                "external_id": p.external_id,
                "kind": "CUSTOMER",
                "attributes": {},
                "channels": [],
                "joined_at": p.joined_at,
                "created_at": p.joined_at,
                "updated_at": now,
                "points_balance": 0,
                "pending_points": 0,
            }
            for p in planted
        ],
    )
    ids = dict(
        (
            await session.execute(
                select(Member.external_id, Member.id).where(Member.program_id == program_id)
            )
        ).all()
    )
    rng = random.Random(11)
    rows = []
    for p in planted:
        for day, count in sorted(p.counts.items()):
            at = datetime.combine(day, time(12), tzinfo=UTC)
            amount = count * rng.randint(5, 50) * UNITS
            rows.append(
                {
                    "member_id": ids[p.external_id],
                    "event_type": "purchase",
                    "day": day,
                    "program_id": program_id,
                    "count": count,
                    "amount_count": count,
                    "amount_sum": amount,
                    "amount_min": amount // count,
                    "amount_max": amount // count,
                    "first_at": at,
                    "last_at": at,
                }
            )
    await session.execute(insert(cast(Table, EventAggregate.__table__)), rows)


async def seed(services: Services, program_id: int, members: int, **options: Any) -> list[Planted]:
    now = services.clock.now()
    planted = plant(now, members, **options)
    async with services.db.unit_of_work() as uow:
        await insert_history(uow.session, program_id, planted, now)
    return planted


def ceiling_auc(planted: list[Planted], holdout: list[date]) -> tuple[float, int]:
    """AUC of the planted probability on the holdout rows, and how many rows there are."""
    labels, truth = [], []
    for cutoff in holdout:
        for p in planted:
            if p.eligible(cutoff):
                labels.append(int(p.churned(cutoff)))
                truth.append(p.churn_probability(cutoff))
    return float(roc_auc_score(labels, truth)), len(labels)


TRAIN = """
mutation($c: Int) { trainChurnModel(cutoffs: $c) {
  algorithm cutoffs holdoutCutoffs rows positives negatives holdoutRows holdoutPositives auc brier
  calibration { lower upper count meanPredicted observedRate } features scored segmentsRefreshed
} }"""
LATEST = "query { churnModel { trainedAt auc brier rows positives scored features coefficients } }"
ISSUE = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }"
MEMBER = "query($id: String!) { member(externalId: $id) { externalId churnRisk7d } }"


async def test_model_ranks_holdout_near_the_planted_ceiling(
    services: Services, program: ProgramFixture, admin: GraphQLClient
) -> None:
    # given a program with a planted churn pattern and a segment reading the score
    planted = await seed(services, program.id, 1000)
    rule = "churnRisk7d >= 0.7"
    await services.segments.create(
        program.id, SegmentDraft("likely_churn", "Likely to churn", "DYNAMIC", rule=rule), actor="test"
    )
    assert (await admin.data(LATEST))["churnModel"] is None

    # when the admin trains the model
    report = (await admin.data(TRAIN, {"c": 8}))["trainChurnModel"]

    # then the holdout is the newest quarter of the weekly cutoffs, judged against the planted truth
    assert report["algorithm"] == "logistic_regression"
    assert len(report["cutoffs"]) == 8
    assert report["holdoutCutoffs"] == report["cutoffs"][-2:]
    ceiling, holdout_rows = ceiling_auc(planted, [date.fromisoformat(d) for d in report["holdoutCutoffs"]])
    assert report["holdoutRows"] == holdout_rows
    assert report["auc"] > 0.75
    assert report["auc"] > ceiling - 0.05, (report["auc"], ceiling)
    assert report["positives"] >= 100
    assert report["negatives"] >= 100
    assert report["rows"] + report["holdoutRows"] == sum(
        p.eligible(date.fromisoformat(c)) for c in report["cutoffs"] for p in planted
    )
    assert 0 < report["brier"] < 0.25
    calibration = report["calibration"]
    assert [b["lower"] for b in calibration] == pytest.approx([k / 10 for k in range(10)])
    assert sum(b["count"] for b in calibration) == holdout_rows
    for b in calibration:
        if b["count"] >= 100:  # well calibrated where the bins are full
            assert abs(b["meanPredicted"] - b["observedRate"]) < 0.1, b
    assert report["features"][0] == "recency_days"
    assert report["scored"] == sum(1 for p in planted if p.counts)
    assert report["segmentsRefreshed"] == ["likely_churn"]

    # and the latest model and the members' scores are readable
    latest = (await admin.data(LATEST))["churnModel"]
    assert latest["auc"] == report["auc"]
    assert latest["scored"] == report["scored"]
    assert set(latest["coefficients"]) == {"features", "means", "scales", "coefficients", "intercept"}
    async with services.db.read() as session:
        stored = dict(
            (
                await session.execute(
                    select(Member.external_id, Member.churn_risk_7d).where(Member.program_id == program.id)
                )
            ).all()
        )
    member = (await admin.data(MEMBER, {"id": "c0"}))["member"]
    assert member["churnRisk7d"] == stored["c0"]

    # and the segment holds exactly the members scored >= 0.7, by both evaluators
    expected = {key for key, risk in stored.items() if risk is not None and risk >= 0.7}
    assert 0 < len(expected) < len(stored)
    assert await segment_members(services, program.id, "likely_churn") == expected
    assert await evaluated_in_memory(services, program.id, rule) == expected


EDGE_RISKS = {"none": None, "low": 1 / 3, "half": 0.5, "below": 0.6999999999999999, "at": 0.7}
EDGE_RISKS |= {"above": 0.7000000000000001, "one": 1.0}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("churnRisk7d >= 0.7", {"at", "above", "one"}),
        ("churnRisk7d > 0.7", {"above", "one"}),
        ("churnRisk7d = 0.7", {"at"}),
        ("churnRisk7d != 0.7", {"low", "half", "below", "above", "one"}),
        ("churnRisk7d < 0.5", {"low"}),
        ("churnRisk7d between [0.5, 0.7]", {"half", "below", "at"}),
        ("churnRisk7d in [0.5, 1]", {"half", "one"}),
        ("churnRisk7d not in [0.5, 1]", {"low", "below", "at", "above"}),
        ("exists(churnRisk7d) = false", {"none"}),
        ("not churnRisk7d < 0.7", {"none", "at", "above", "one"}),
        ('churnRisk7d = "0.7"', set()),
    ],
)
async def test_both_evaluators_agree_on_stored_scores(
    services: Services, program: ProgramFixture, rule: str, expected: set[str]
) -> None:
    # given members with scores on and around the thresholds
    now = services.clock.now()
    async with services.db.unit_of_work() as uow:
        await uow.session.execute(
            insert(cast(Table, Member.__table__)),
            [
                {
                    "program_id": program.id,
                    "external_id": key,
                    "kind": "CUSTOMER",
                    "attributes": {},
                    "channels": [],
                    "joined_at": now,
                    "created_at": now,
                    "updated_at": now,
                    "points_balance": 0,
                    "pending_points": 0,
                    "churn_risk_7d": risk,
                    "churn_scored_at": None if risk is None else now,
                }
                for key, risk in EDGE_RISKS.items()
            ],
        )

    # when a segment is defined by the rule, then SQL and memory select the same members
    await services.segments.create(
        program.id, SegmentDraft("churn_edge", "edge", "DYNAMIC", rule=rule), actor="test"
    )
    assert await segment_members(services, program.id, "churn_edge") == expected
    assert await evaluated_in_memory(services, program.id, rule) == expected


async def segment_members(services: Services, program_id: int, key: str) -> set[str]:
    from domain.models import Segment, SegmentMembership

    async with services.db.read() as session:
        rows = await session.execute(
            select(Member.external_id)
            .join(SegmentMembership, SegmentMembership.member_id == Member.id)
            .join(Segment, Segment.id == SegmentMembership.segment_id)
            .where(Segment.program_id == program_id, Segment.key == key)
        )
        return set(rows.scalars())


async def evaluated_in_memory(services: Services, program_id: int, rule: str) -> set[str]:
    node = parse_rule(rule)
    now = services.clock.now()
    async with services.db.read() as session:
        ids = list(
            (await session.execute(select(Member.id).where(Member.program_id == program_id))).scalars()
        )
        facts = await load_facts(session, program_id, ids, Needs.of([node]), now)
    evaluation = Evaluation(now)
    return {f.external_id for f in facts.values() if evaluation.holds(node, f)}


async def test_refuses_to_train_on_too_little_history(services: Services, program: ProgramFixture) -> None:
    # given 60 members: fewer than 100 churned rows over the training cutoffs
    await seed(services, program.id, 60, decliners=0.1)

    # when training, then it is refused with the counts named and nothing stored
    with pytest.raises(InvalidInput) as refused:
        await services.churn.train(program.id, 4)
    message = refused.value.message
    assert message.startswith("too little history to train a churn model: the ")
    assert "churned and" in message
    assert "at least 100 of each are needed" in message
    assert await services.churn.latest(program.id) is None


async def test_cutoffs_are_bounded(services: Services, program: ProgramFixture) -> None:
    with pytest.raises(InvalidInput, match="cutoffs: must be between 3 and 104, got 2"):
        await services.churn.train(program.id, 2)


async def test_churn_risk_is_readable_by_admins_and_the_member_itself(
    client: httpx.AsyncClient, integration: GraphQLClient, admin: GraphQLClient
) -> None:
    # given an unscored member, an admin reads null
    await integration.data(UPSERT, {"m": [{"externalId": "solo"}, {"externalId": "other"}]})
    assert (await admin.data(MEMBER, {"id": "solo"}))["member"]["churnRisk7d"] is None

    # a member token reads its own score, and not another member's
    issued = await integration.data(ISSUE, {"m": "solo"})
    me = GraphQLClient(client, issued["issueMemberToken"]["token"])
    assert (await me.data(MEMBER, {"id": "solo"}))["member"] == {"externalId": "solo", "churnRisk7d": None}
    error = await me.error(MEMBER, {"id": "other"})
    assert error["extensions"]["code"] == "FORBIDDEN"


def test_cli_trains_and_prints_the_report(tmp_path: Path) -> None:
    env = cli_environment(tmp_path)
    ok(env, "db", "upgrade")
    ok(env, "program", "create", "--key", "shop", "--name", "Shop", "--kind", "B2C")

    # too little history: a clear refusal on stderr
    refused = loyalty(env, "predict", "train", "--program", "shop")
    assert refused.returncode == 1
    assert "BAD_USER_INPUT: too little history to train a churn model" in refused.stderr

    asyncio.run(_seed_file(env["LOYALTY_DATABASE_URL"], 400))
    report = ok(env, "predict", "train", "--program", "shop", "--cutoffs", "6")
    assert report["program"] == "shop"
    assert len(report["cutoffs"]) == 6
    assert len(report["holdoutCutoffs"]) == 1
    assert report["auc"] > 0.75
    assert report["positives"] >= 100
    assert report["negatives"] >= 100
    assert report["scored"] > 0
    assert len(report["calibration"]) == 10
    assert {"rows", "holdoutRows", "brier", "model", "segmentsRefreshed"} <= set(report)


async def _seed_file(url: str, members: int) -> None:
    from domain.models import Program

    db = Database(create_engine(url))
    try:
        now = datetime.now(UTC)
        async with db.unit_of_work() as uow:
            program_id = (
                await uow.session.execute(select(Program.id).where(Program.key == "shop"))
            ).scalar_one()
            await insert_history(uow.session, program_id, plant(now, members), now)
    finally:
        await db.dispose()


def test_cli_help_lists_predict() -> None:
    result = subprocess.run(
        [str(BIN), "predict", "train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "--cutoffs" in result.stdout


def test_training_without_scikit_learn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.linear_model", None)
    with pytest.raises(PredictionUnavailable, match=r"pip install 'loyalty-engine\[predict\]'") as missing:
        fit(FEATURES, [[0.0] * len(FEATURES)], [True])
    assert missing.value.code == "PREDICTION_UNAVAILABLE"
