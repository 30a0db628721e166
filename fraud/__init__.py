"""Fraud audit: the rules behind pipeline step 4 (see DESIGN.md).

Until the rules land, the audit allows every accrual: `default_auditor()` is
the single place the API asks for the auditor to wire into the pipeline.
"""

from __future__ import annotations

from domain.audit import AllowAll, Auditor


def default_auditor() -> Auditor:
    return AllowAll()
