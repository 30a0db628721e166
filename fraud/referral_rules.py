"""The referral-graph rules: judge one new referral from the facts around it. Pure, no I/O.

They run at signup (fraud/referrals.py loads the facts), not on event accruals, so they are
not in `fraud.rules.RULES`; they are configured, shadowed and listed like the other rules
(`setFraudRule`, `fraudRules`), but not backtested (a backtest replays events, and a referral is
no event). Verdicts: BLOCK stores the referral BLOCKED (no reward, ever), REVIEW stores it HELD
(nothing paid until a reviewer decides, `decideReferral`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from domain.audit import ALLOW, AuditOutcome, Finding
from domain.enums import Verdict
from fraud.config import FraudConfig, RuleSettings
from fraud.history import Identity
from fraud.rules import SEVERITY


@dataclass(frozen=True)
class ReferralFacts:
    referrer: Identity
    referred: Identity
    #: The referrer's chain of referrers, nearest first (who referred the referrer, and so on).
    upline: tuple[Identity, ...]
    #: Referrals the referrer made in the last 24 hours and 7 days, this one included.
    last_day: int
    last_week: int


class ReferralRule(Protocol):
    name: str

    def __init__(self, settings: RuleSettings) -> None: ...

    def judge(self, facts: ReferralFacts) -> tuple[Verdict, str] | None: ...


class ReferralSharedIdentity:
    """`self_referral` at signup: the referrer and the new member share a device, phone or email."""

    name = "referral_shared_identity"

    def __init__(self, settings: RuleSettings) -> None:
        pass

    def judge(self, facts: ReferralFacts) -> tuple[Verdict, str] | None:
        shared = facts.referrer.shared_with(facts.referred)
        if not shared:
            return None
        return (
            Verdict.BLOCK,
            f"referrer {facts.referrer.external_id} and new member {facts.referred.external_id} "
            f"share {', '.join(shared)}",
        )


class ReferralCycle:
    """The new member is someone up the referrer's chain under a new externalId: A referred B, and
    B's code now signs up A again (or further up). Codes count only on creation, so a cycle of
    member ids cannot form; the cycle fraud makes is one of people, matched by device, phone or
    email (the direct referrer is `referral_shared_identity`'s)."""

    name = "referral_cycle"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_depth = int(settings["maxDepth"])

    def judge(self, facts: ReferralFacts) -> tuple[Verdict, str] | None:
        for steps, above in enumerate(facts.upline[: self.max_depth - 1], start=2):
            shared = above.shared_with(facts.referred)
            if shared:
                return (
                    Verdict.BLOCK,
                    f"new member {facts.referred.external_id} shares {', '.join(shared)} with "
                    f"{above.external_id}, {steps} steps up the referrer {facts.referrer.external_id}'s "
                    "chain of referrers (a referral cycle)",
                )
        return None


class ReferralVelocity:
    name = "referral_velocity"

    def __init__(self, settings: RuleSettings) -> None:
        self.max_per_day = int(settings["maxPerDay"])
        self.max_per_week = int(settings["maxPerWeek"])

    def judge(self, facts: ReferralFacts) -> tuple[Verdict, str] | None:
        who = f"referrer {facts.referrer.external_id}"
        if facts.last_day > self.max_per_day:
            return (
                Verdict.REVIEW,
                f"{who}: {facts.last_day} referrals in 24 h (review above {self.max_per_day})",
            )
        if facts.last_week > self.max_per_week:
            return (
                Verdict.REVIEW,
                f"{who}: {facts.last_week} referrals in 7 days (review above {self.max_per_week})",
            )
        return None


REFERRAL_RULES: tuple[type[ReferralRule], ...] = (ReferralSharedIdentity, ReferralCycle, ReferralVelocity)
REFERRAL_RULE_NAMES = frozenset(rule.name for rule in REFERRAL_RULES)


class ReferralJudge:
    """The referral rules a configuration turns on (shadowed ones report, never act)."""

    def __init__(self, config: FraudConfig) -> None:
        self.rules: list[tuple[ReferralRule, bool]] = [
            (rule(config[rule.name]), config[rule.name].shadow)
            for rule in REFERRAL_RULES
            if config[rule.name].enabled
        ]

    def judge(self, facts: ReferralFacts) -> AuditOutcome:
        findings: list[Finding] = []
        verdict = Verdict.ALLOW
        for rule, shadow in self.rules:
            found = rule.judge(facts)
            if found is None:
                continue
            findings.append(Finding(rule.name, found[0], found[1], shadow=shadow))
            if not shadow and SEVERITY[found[0]] > SEVERITY[verdict]:
                verdict = found[0]
        return AuditOutcome(verdict, tuple(findings)) if findings else ALLOW
