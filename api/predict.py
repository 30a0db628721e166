"""Churn prediction: train a program's model, read its latest metadata (admin, beyond the contract)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from api.context import Info
from domain import models
from domain.predict.service import DEFAULT_CUTOFFS, ChurnReport


@strawberry.type(description="Holdout rows whose predicted churn probability fell in [lower, upper)")
class ChurnCalibrationBin:
    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


@strawberry.type(
    description="A trained churn model (label: no purchase in the 7 days after a weekly cutoff), judged "
    "on the newest cutoffs (the holdout): AUC, Brier score and a 10-bin reliability table"
)
class ChurnModel:
    trained_at: datetime
    algorithm: str
    cutoffs: list[date]
    holdout_cutoffs: list[date]
    rows: int = strawberry.field(description="training rows (member x cutoff)")
    positives: int = strawberry.field(description="training rows that churned")
    negatives: int
    holdout_rows: int
    holdout_positives: int
    auc: float
    brier: float
    calibration: list[ChurnCalibrationBin]
    features: list[str]
    coefficients: JSON = strawberry.field(description="means, scales, coefficients and intercept")
    scored: int = strawberry.field(description="members given a churnRisk7d")
    segments_refreshed: list[str]


def _model(data: dict[str, Any]) -> ChurnModel:
    """From the report as `ChurnReport.as_json` writes it (and `churn_models.report` keeps it)."""
    model = data["model"]
    return ChurnModel(
        trained_at=datetime.fromisoformat(str(data["trainedAt"])),
        algorithm=str(data["algorithm"]),
        cutoffs=[date.fromisoformat(d) for d in data["cutoffs"]],
        holdout_cutoffs=[date.fromisoformat(d) for d in data["holdoutCutoffs"]],
        rows=int(data["rows"]),
        positives=int(data["positives"]),
        negatives=int(data["negatives"]),
        holdout_rows=int(data["holdoutRows"]),
        holdout_positives=int(data["holdoutPositives"]),
        auc=float(data["auc"]),
        brier=float(data["brier"]),
        calibration=[ChurnCalibrationBin(**_snake(b)) for b in data["calibration"]],
        features=list(model["features"]),
        coefficients=model,
        scored=int(data["scored"]),
        segments_refreshed=list(data["segmentsRefreshed"]),
    )


def _snake(b: dict[str, Any]) -> dict[str, Any]:
    return {
        "lower": b["lower"],
        "upper": b["upper"],
        "count": b["count"],
        "mean_predicted": b["meanPredicted"],
        "observed_rate": b["observedRate"],
    }


def churn_model_of(row: models.ChurnModel | ChurnReport) -> ChurnModel:
    return _model(row.as_json() if isinstance(row, ChurnReport) else row.report)


@strawberry.type
class PredictQueries:
    @strawberry.field(description="Beyond the contract. The program's latest churn model, or null")
    async def churn_model(self, info: Info) -> ChurnModel | None:
        program_id = info.context.principal.program_id
        row = await info.context.services.churn.latest(program_id)
        return None if row is None else churn_model_of(row)


@strawberry.type
class PredictMutations:
    @strawberry.mutation(
        description="Beyond the contract. Trains the program's churn model on weekly cutoffs of its "
        "history, stores every member's churnRisk7d and refreshes the segments reading it (slow)"
    )
    async def train_churn_model(self, info: Info, cutoffs: int = DEFAULT_CUTOFFS) -> ChurnModel:
        program_id = info.context.principal.program_id
        return churn_model_of(await info.context.services.churn.train(program_id, cutoffs))
