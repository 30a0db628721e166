"""The default rules (DESIGN.md, Fraud). Each is a small object that judges one candidate. Pure.

A rule returns a `Finding` (REVIEW or BLOCK, with a detail a reviewer can act on)
or None. The verdict of an accrual is its most severe finding among the rules that
act; rules in shadow mode still report findings, marked `shadow`, that change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Protocol

from domain.audit import ALLOW, AuditOutcome, Finding
from domain.enums import Verdict
from fraud.config import FraudConfig, RuleSettings
from fraud.history import Candidate, History

SEVERITY = {Verdict.ALLOW: 0, Verdict.REVIEW: 1, Verdict.BLOCK: 2}


class Rule(Protocol):
    name: str

    def __init__(self, settings: RuleSettings) -> None: ...

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None: ...


class DuplicateReceipt:
    name = "duplicate_receipt"

    def __init__(self, settings: RuleSettings) -> None:
        pass

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        receipt = candidate.receipt
        if receipt is None:
            return None
        first = history.receipts.get(receipt)
        if first is None or first == candidate.external_id:
            return None
        return Verdict.BLOCK, f"receiptId {receipt} was already used by event {first}"


class Velocity:
    name = "velocity"

    def __init__(self, settings: RuleSettings) -> None:
        self.review_above = int(settings["reviewAbove"])
        self.block_above = int(settings["blockAbove"])
        self.width = timedelta(minutes=settings["windowMinutes"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        count = history.events_in_window(candidate, self.width)
        minutes = f"{self.width.total_seconds() / 60:g}"
        if count > self.block_above:
            return (
                Verdict.BLOCK,
                f"{count} point-earning events in {minutes} minutes (block above {self.block_above})",
            )
        if count > self.review_above:
            return (
                Verdict.REVIEW,
                f"{count} point-earning events in {minutes} minutes (review above {self.review_above})",
            )
        return None


class SingleAccrualCap:
    name = "single_accrual_cap"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_points = int(settings["maxPoints"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        if candidate.points <= self.max_points:
            return None
        return Verdict.REVIEW, f"{candidate.points} points in one accrual (cap {self.max_points})"


class DailyPointsCap:
    name = "daily_points_cap"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_points = int(settings["maxPoints"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        before = history.points_of_day(candidate)
        total = before + candidate.points
        if total <= self.max_points:
            return None
        day = history.day(candidate.occurred_at)
        return (
            Verdict.REVIEW,
            f"{total} points on {day} with this accrual ({before} before; cap {self.max_points})",
        )


class AmountOutlier:
    name = "amount_outlier"

    def __init__(self, settings: RuleSettings) -> None:
        self.z = float(settings["zScore"])
        self.min_samples = int(settings["minSamples"])
        self.days = int(settings["days"])
        self.min_std = float(settings["minStd"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        if candidate.amount is None:
            return None
        n, mean, std = history.amount_stats(candidate, self.days)
        if n < self.min_samples:
            return None
        excess = float(candidate.amount) - mean
        spread = max(std, self.min_std)
        seen = f"{n} {candidate.type} events in {self.days} days"
        if spread == 0:  # minStd 0 and no spread at all: anything above the constant is an outlier
            if excess <= 0:
                return None
            return (
                Verdict.REVIEW,
                f"amount {candidate.amount} is above the member's {seen}, all {mean:.2f}",
            )
        z = excess / spread
        if z <= self.z:
            return None
        return (
            Verdict.REVIEW,
            f"amount {candidate.amount} is {z:.1f} standard deviations above the member's mean "
            f"{mean:.2f} of {seen} (limit {self.z:g})",
        )


class SharedDevice:
    name = "shared_device"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_members = int(settings["maxMembers"])
        self.width = timedelta(hours=settings["hours"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        if candidate.device is None:
            return None
        members = history.members_on_device(candidate, self.width)
        if members <= self.max_members:
            return None
        hours = f"{self.width.total_seconds() / 3600:g}"
        return (
            Verdict.REVIEW,
            f"deviceId {candidate.device} used by {members} members within {hours} h "
            f"(limit {self.max_members})",
        )


class SelfReferral:
    name = "self_referral"

    def __init__(self, settings: RuleSettings) -> None:
        pass

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        referee = candidate.referee
        if referee is None:
            return None
        referrer = history.identities.get(candidate.member_id)
        if referrer is None:
            return None
        if candidate.device is not None:  # the referral was sent from this device
            referrer = replace(referrer, devices=referrer.devices | {candidate.device})
        if referee == referrer.external_id:
            return Verdict.BLOCK, f"member {referee} refers itself"
        referee_id = history.member_ids.get(referee)
        other = None if referee_id is None else history.identities.get(referee_id)
        if other is None:
            return None
        shared = referrer.shared_with(other)
        if not shared:
            return None
        return Verdict.BLOCK, f"referrer and referee {referee} share {', '.join(shared)}"


class CashierCollusion:
    name = "cashier_collusion"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_per_day = int(settings["maxPerDay"])

    def judge(self, candidate: Candidate, history: History) -> tuple[Verdict, str] | None:
        cashier = candidate.cashier
        if cashier is None:
            return None
        credits = history.credits_by_cashier(candidate)
        if credits <= self.max_per_day:
            return None
        day = history.day(candidate.occurred_at)
        return (
            Verdict.REVIEW,
            f"cashierId {cashier} credited this member {credits} times on {day} (limit {self.max_per_day})",
        )


RULES: tuple[type[Rule], ...] = (
    DuplicateReceipt,
    Velocity,
    SingleAccrualCap,
    DailyPointsCap,
    AmountOutlier,
    SharedDevice,
    SelfReferral,
    CashierCollusion,
)


class Judge:
    """The rules a configuration turns on, judging one candidate at a time."""

    def __init__(self, config: FraudConfig, only: Sequence[str] | None = None) -> None:
        self.rules: list[tuple[Rule, bool]] = [
            (rule(config[rule.name]), config[rule.name].shadow)
            for rule in RULES
            if config[rule.name].enabled and (only is None or rule.name in only)
        ]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def judge(self, candidate: Candidate, history: History) -> AuditOutcome:
        if candidate.points <= 0:
            return ALLOW
        findings: list[Finding] = []
        verdict = Verdict.ALLOW
        for rule, shadow in self.rules:
            found = rule.judge(candidate, history)
            if found is None:
                continue
            findings.append(Finding(rule.name, found[0], found[1], shadow=shadow))
            if not shadow and SEVERITY[found[0]] > SEVERITY[verdict]:
                verdict = found[0]
        return AuditOutcome(verdict, tuple(findings)) if findings else ALLOW
