"""Fitting and judging the churn model: scikit-learn's StandardScaler + LogisticRegression.

scikit-learn is the optional `predict` extra and is imported only inside `fit`, so the
rest of the engine runs without it. The fitted model is kept as plain numbers (means,
scales, coefficients, intercept) so that scoring needs no pickle and no scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domain.errors import DomainError

CALIBRATION_BINS = 10


class PredictionUnavailable(DomainError):
    """The optional scikit-learn dependency is missing."""

    code = "PREDICTION_UNAVAILABLE"


@dataclass(frozen=True)
class LinearModel:
    """A logistic model on standardised features: p = sigmoid(b + sum(w * (x - mean) / scale))."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    coefficients: tuple[float, ...]
    intercept: float

    def probability(self, x: Sequence[float]) -> float:
        z = self.intercept + sum(
            w * (v - m) / s for w, v, m, s in zip(self.coefficients, x, self.means, self.scales, strict=True)
        )
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def as_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "means": list(self.means),
            "scales": list(self.scales),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
        }


@dataclass(frozen=True)
class CalibrationBin:
    """Holdout rows whose predicted probability fell in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float | None
    observed_rate: float | None


def fit(features: tuple[str, ...], x: Sequence[Sequence[float]], y: Sequence[bool]) -> LinearModel:
    """Fit on the training rows (CPU-bound: run it off the event loop)."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
    except ImportError as error:
        raise PredictionUnavailable(
            "churn prediction needs scikit-learn: pip install 'loyalty-engine[predict]'"
        ) from error
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(max_iter=1000).fit(scaler.transform(x), [int(v) for v in y])
    scales = [float(s) if s > 0 else 1.0 for s in scaler.scale_]
    return LinearModel(
        features,
        tuple(float(m) for m in scaler.mean_),
        tuple(scales),
        tuple(float(w) for w in regression.coef_[0]),
        float(regression.intercept_[0]),
    )


def roc_auc(y: Sequence[bool], p: Sequence[float]) -> float:
    """Area under the ROC curve (scikit-learn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(v) for v in y], list(p)))


def brier(y: Sequence[bool], p: Sequence[float]) -> float:
    """Mean squared error of the probabilities (scikit-learn's brier_score_loss)."""
    from sklearn.metrics import brier_score_loss

    return float(brier_score_loss([int(v) for v in y], list(p)))


def reliability(y: Sequence[bool], p: Sequence[float], bins: int = CALIBRATION_BINS) -> list[CalibrationBin]:
    """Equal-width bins of predicted probability (the last one includes 1.0), observed churn rate in each."""
    table: list[CalibrationBin] = []
    for k in range(bins):
        lower, upper = k / bins, (k + 1) / bins
        chosen = [
            (v, q) for v, q in zip(y, p, strict=True) if lower <= q < upper or (k == bins - 1 and q == 1)
        ]
        n = len(chosen)
        table.append(
            CalibrationBin(
                lower,
                upper,
                n,
                sum(q for _, q in chosen) / n if n else None,
                sum(v for v, _ in chosen) / n if n else None,
            )
        )
    return table
