"""Comparing two conversion rates: uplift, its 95 % Wald interval and the two-proportion z-test.

Pure: no I/O. `variant` is the arm compared, `control` the reference arm; each is
(converted, exposed). Where a figure is undefined (an empty arm, or a standard
error of zero because both rates are 0 or both are 1) it is None, never an error.

- uplift = p_v - p_c (absolute difference of the rates);
- 95 % CI = uplift ± z_0.975 · sqrt(p_v(1-p_v)/n_v + p_c(1-p_c)/n_c) (unpooled Wald);
- z = uplift / sqrt(p(1-p)(1/n_v + 1/n_c)) with the pooled p = (x_v + x_c)/(n_v + n_c);
  p-value = 2 · (1 - Φ(|z|)), two-sided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Φ⁻¹(0.975): the two-sided 95 % normal quantile.
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Comparison:
    uplift: float | None
    ci_low: float | None
    ci_high: float | None
    z: float | None
    p_value: float | None


def normal_cdf(x: float) -> float:
    """Φ(x), the standard normal distribution function."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def two_sided_p(z: float) -> float:
    """2 · (1 - Φ(|z|)), computed as erfc(|z|/√2) so that tiny p-values keep their precision."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def rate(converted: int, exposed: int) -> float | None:
    return None if exposed <= 0 else converted / exposed


def compare(variant: tuple[int, int], control: tuple[int, int]) -> Comparison:
    """The variant's uplift over the control, its 95 % CI and the z-test; see the module doc."""
    x_v, n_v = variant
    x_c, n_c = control
    p_v, p_c = rate(x_v, n_v), rate(x_c, n_c)
    if p_v is None or p_c is None:
        return Comparison(None, None, None, None, None)
    uplift = p_v - p_c
    ci_low = ci_high = None
    wald_se = math.sqrt(p_v * (1 - p_v) / n_v + p_c * (1 - p_c) / n_c)
    if wald_se > 0:
        ci_low, ci_high = uplift - Z_95 * wald_se, uplift + Z_95 * wald_se
    pooled = (x_v + x_c) / (n_v + n_c)
    pooled_se = math.sqrt(pooled * (1 - pooled) * (1 / n_v + 1 / n_c))
    if pooled_se == 0:
        return Comparison(uplift, ci_low, ci_high, None, None)
    z = uplift / pooled_se
    return Comparison(uplift, ci_low, ci_high, z, two_sided_p(z))
