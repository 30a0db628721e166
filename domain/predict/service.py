"""Train a program's churn model on its own history, score every member, refresh the segments.

Training reads in one transaction, fits off the event loop, then writes the model's
metadata, the members' scores and the segments reading `churnRisk7d` in one unit of work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database
from domain.enums import SegmentKind
from domain.errors import InvalidInput
from domain.models import ChurnModel, Member
from domain.predict.features import (
    FEATURES,
    MemberHistory,
    Rows,
    build_rows,
    eligible,
    features_at,
    weekly_cutoffs,
)
from domain.predict.history import load_histories
from domain.predict.model import CalibrationBin, LinearModel, brier, fit, reliability, roc_auc
from domain.segments.conditions import AttrCompare, walk
from domain.segments.engine import SegmentEngine

ALGORITHM = "logistic_regression"
MIN_CLASS_ROWS = 100
MIN_CUTOFFS, MAX_CUTOFFS = 3, 104
DEFAULT_CUTOFFS = 8
#: Features reach 90 days back, and the trend compares with the 30 days before the last 30.
LOOKBACK_DAYS = 90
CHURN_PATH = "churnRisk7d"


@dataclass(frozen=True)
class ChurnReport:
    """What training found: holdout quality, class counts and the scores written."""

    program_id: int
    trained_at: datetime
    cutoffs: list[date]
    holdout_cutoffs: list[date]
    rows: int
    positives: int
    negatives: int
    holdout_rows: int
    holdout_positives: int
    auc: float
    brier: float
    calibration: list[CalibrationBin]
    model: LinearModel
    scored: int
    segments_refreshed: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "trainedAt": self.trained_at.isoformat(),
            "algorithm": ALGORITHM,
            "cutoffs": [c.isoformat() for c in self.cutoffs],
            "holdoutCutoffs": [c.isoformat() for c in self.holdout_cutoffs],
            "rows": self.rows,
            "positives": self.positives,
            "negatives": self.negatives,
            "holdoutRows": self.holdout_rows,
            "holdoutPositives": self.holdout_positives,
            "auc": self.auc,
            "brier": self.brier,
            "calibration": [
                {
                    "lower": b.lower,
                    "upper": b.upper,
                    "count": b.count,
                    "meanPredicted": b.mean_predicted,
                    "observedRate": b.observed_rate,
                }
                for b in self.calibration
            ],
            "model": self.model.as_json(),
            "scored": self.scored,
            "segmentsRefreshed": self.segments_refreshed,
        }


def check_cutoffs(cutoffs: int) -> int:
    if not MIN_CUTOFFS <= cutoffs <= MAX_CUTOFFS:
        raise InvalidInput(
            f"cutoffs: must be between {MIN_CUTOFFS} and {MAX_CUTOFFS}, got {cutoffs}", field="cutoffs"
        )
    return cutoffs


def split(rows: Rows, holdout: set[date]) -> tuple[Rows, Rows]:
    """Rows of the holdout cutoffs apart from the others (a time-based split)."""
    train, test = Rows([], [], []), Rows([], [], [])
    for x, y, at in zip(rows.x, rows.y, rows.cutoffs, strict=True):
        target = test if at in holdout else train
        target.x.append(x)
        target.y.append(y)
        target.cutoffs.append(at)
    return train, test


class ChurnService:
    def __init__(self, db: Database, clock: Clock, engine: SegmentEngine) -> None:
        self.db = db
        self.clock = clock
        self.engine = engine

    async def train(self, program_id: int, cutoffs: int = DEFAULT_CUTOFFS) -> ChurnReport:
        """Fit on weekly cutoffs (the newest for the holdout), store the model and every member's score.

        InvalidInput when the training rows hold fewer than 100 churned or 100 retained members.
        """
        check_cutoffs(cutoffs)
        now = self.clock.now()
        days = weekly_cutoffs(now, cutoffs)
        holdout = days[-max(1, cutoffs // 4) :]
        async with self.db.read() as session:
            members = await load_histories(session, program_id, days[0] - timedelta(days=LOOKBACK_DAYS))
        train, test = split(build_rows(members, days), set(holdout))
        if train.positives < MIN_CLASS_ROWS or train.negatives < MIN_CLASS_ROWS:
            raise InvalidInput(
                f"too little history to train a churn model: the {len(train.y)} training rows over "
                f"{len(days) - len(holdout)} weekly cutoffs hold {train.positives} churned and "
                f"{train.negatives} retained members; at least {MIN_CLASS_ROWS} of each are needed",
                field="program",
            )
        if not test.positives or not test.negatives:
            raise InvalidInput(
                f"the holdout ({len(test.y)} rows at {', '.join(d.isoformat() for d in holdout)}) needs "
                f"churned and retained members to be judged; it has {test.positives} churned",
                field="program",
            )
        model = await asyncio.to_thread(fit, FEATURES, train.x, train.y)
        predicted = [model.probability(x) for x in test.x]
        auc, score = roc_auc(test.y, predicted), brier(test.y, predicted)
        scores = score_members(model, members, now)
        async with self.db.unit_of_work() as uow:
            session = uow.session
            await write_scores(session, program_id, scores, now)
            refreshed = await self._refresh_segments(session, program_id, now)
            report = ChurnReport(
                program_id=program_id,
                trained_at=now,
                cutoffs=days,
                holdout_cutoffs=holdout,
                rows=len(train.y),
                positives=train.positives,
                negatives=train.negatives,
                holdout_rows=len(test.y),
                holdout_positives=test.positives,
                auc=auc,
                brier=score,
                calibration=reliability(test.y, predicted),
                model=model,
                scored=len(scores),
                segments_refreshed=refreshed,
            )
            session.add(
                ChurnModel(
                    program_id=program_id,
                    trained_at=now,
                    algorithm=ALGORITHM,
                    auc=auc,
                    brier=score,
                    rows=report.rows,
                    positives=report.positives,
                    negatives=report.negatives,
                    scored=report.scored,
                    report=report.as_json(),
                )
            )
        return report

    async def _refresh_segments(self, session: AsyncSession, program_id: int, now: datetime) -> list[str]:
        """Recompute the non-STATIC segments reading churnRisk7d (the engine adds their readers)."""
        index = await self.engine.index(session, program_id)
        readers = [
            d.key
            for d in index.ordered
            if d.kind != SegmentKind.STATIC
            and d.condition is not None
            and any(isinstance(n, AttrCompare) and n.path == CHURN_PATH for n in walk(d.condition))
        ]
        if readers:
            await self.engine.recompute(session, program_id, readers, now)
        return readers

    async def latest(self, program_id: int) -> ChurnModel | None:
        """The program's most recently trained model, or None."""
        async with self.db.read() as session:
            query = (
                select(ChurnModel)
                .where(ChurnModel.program_id == program_id)
                .order_by(ChurnModel.trained_at.desc(), ChurnModel.id.desc())
                .limit(1)
            )
            return (await session.execute(query)).scalar_one_or_none()


async def write_scores(
    session: AsyncSession, program_id: int, scores: dict[int, float], now: datetime
) -> None:
    """Replace the program's stored scores: `scores` by member id, null for every other member."""
    if session.get_bind().dialect.name == "postgresql":  # id order, like ingest: no deadlock
        locked = select(Member.id).where(Member.program_id == program_id).order_by(Member.id)
        await session.execute(locked.with_for_update())
    await session.execute(
        update(Member).where(Member.program_id == program_id).values(churn_risk_7d=None, churn_scored_at=None)
    )
    if scores:
        members = cast(Table, Member.__table__)
        await session.execute(
            update(members)
            .where(members.c.id == bindparam("scored_id"))
            .values(churn_risk_7d=bindparam("risk"), churn_scored_at=now),
            [{"scored_id": m, "risk": p} for m, p in sorted(scores.items())],
        )


def score_members(model: LinearModel, members: list[MemberHistory], now: datetime) -> dict[int, float]:
    """Scores as of the end of today (UTC): members with a purchase so far; the others stay unscored."""
    cutoff = now.date() + timedelta(days=1)
    return {m.member_id: model.probability(features_at(m, cutoff)) for m in members if eligible(m, cutoff)}
