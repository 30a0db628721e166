"""Fraud audit: the rules behind pipeline step 4 (see DESIGN.md and docs/fraud.md).

`default_auditor()` is the single place the API asks for the auditor to wire into the pipeline.
"""

from __future__ import annotations

from domain.audit import Auditor
from domain.clock import Clock
from fraud.auditor import RuleAuditor


def default_auditor(clock: Clock) -> Auditor:
    return RuleAuditor(clock)
