"""Each program's fraud configuration: per rule on/off, shadow mode and thresholds.

A rule a program never configured runs with the defaults below (DESIGN.md, Fraud).
`non_compliant` is not an audit rule: it is the threshold of blocks that tags a member.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.enums import ProgramKind
from domain.errors import InvalidInput
from domain.models import FraudRuleSetting, Program
from domain.programs.calendar import UTC_ZONE, program_timezone


@dataclass(frozen=True)
class Param:
    name: str
    default: float
    minimum: float
    integer: bool = True
    help: str = ""
    #: The default in B2B programs, where one dealer's sale is worth many shoppers' baskets.
    b2b_default: float | None = None
    maximum: float = 1e12

    def default_for(self, kind: str) -> float:
        return self.b2b_default if kind == ProgramKind.B2B and self.b2b_default is not None else self.default


@dataclass(frozen=True)
class RuleSpec:
    name: str
    summary: str
    params: tuple[Param, ...] = ()


SPECS: Mapping[str, RuleSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            RuleSpec(
                "duplicate_receipt", "BLOCK an event whose properties.receiptId another event already used"
            ),
            RuleSpec(
                "velocity",
                "REVIEW (BLOCK) more than reviewAbove (blockAbove) point-earning events of one member "
                "in any sliding window of windowMinutes",
                (
                    Param("reviewAbove", 20, 1, help="events in the window above which the accrual is held"),
                    Param(
                        "blockAbove", 60, 1, help="events in the window above which the accrual is blocked"
                    ),
                    Param("windowMinutes", 60, 1, help="length of the sliding window", maximum=7 * 24 * 60),
                ),
            ),
            RuleSpec(
                "single_accrual_cap",
                "REVIEW one accrual of more than maxPoints",
                (
                    Param(
                        "maxPoints",
                        5_000,
                        1,
                        help="the most points one event may earn unreviewed",
                        b2b_default=250_000,
                    ),
                ),
            ),
            RuleSpec(
                "daily_points_cap",
                "REVIEW an accrual that takes the member's points of the day (program timezone) "
                "above maxPoints",
                (
                    Param(
                        "maxPoints",
                        10_000,
                        1,
                        help="posted plus held points per member and day",
                        b2b_default=1_000_000,
                    ),
                ),
            ),
            RuleSpec(
                "amount_outlier",
                "REVIEW an amount more than zScore standard deviations above the member's own mean of "
                "the same event type over the last days (needs minSamples)",
                (
                    Param("zScore", 4, 0, integer=False, help="standard deviations above the mean"),
                    Param("minSamples", 10, 2, help="accepted amounts needed before the rule judges"),
                    Param("days", 90, 1, help="history window", maximum=366),
                    Param(
                        "minStd", 1, 0, integer=False, help="floor of the standard deviation (currency units)"
                    ),
                ),
            ),
            RuleSpec(
                "shared_device",
                "REVIEW an event whose properties.deviceId was used by more than maxMembers members "
                "within any window of hours",
                (
                    Param("maxMembers", 3, 1, help="distinct members per device in the window"),
                    Param("hours", 24, 1, help="length of the sliding window", maximum=30 * 24),
                ),
            ),
            RuleSpec(
                "self_referral",
                "BLOCK a referral whose referrer and referee (properties.refereeExternalId) share a "
                "deviceId, phone or email",
            ),
            RuleSpec(
                "cashier_collusion",
                "REVIEW more than maxPerDay accruals of one member credited by one properties.cashierId "
                "in a day (program timezone)",
                (Param("maxPerDay", 10, 1, help="accruals per cashier, member and day"),),
            ),
            RuleSpec(
                "referral_shared_identity",
                "BLOCK a referral (at signup) whose referrer and new member share a deviceId, phone or "
                "email (as self_referral)",
            ),
            RuleSpec(
                "referral_cycle",
                "BLOCK a referral (at signup) whose new member shares a deviceId, phone or email with a "
                "member up the referrer's chain of referrers, within maxDepth steps",
                (Param("maxDepth", 10, 2, help="how far up the chain of referrers to look", maximum=50),),
            ),
            RuleSpec(
                "referral_velocity",
                "REVIEW a referral (at signup) when its referrer made more than maxPerDay referrals in "
                "24 hours or maxPerWeek in 7 days, this one included",
                (
                    Param("maxPerDay", 5, 1, help="referrals per referrer in 24 hours"),
                    Param("maxPerWeek", 20, 1, help="referrals per referrer in 7 days"),
                ),
            ),
            RuleSpec(
                "non_compliant",
                "tag a member non-compliant (source fraud) with more than maxBlocks blocked accruals "
                "in the last days; the tag goes when they fall to maxBlocks or fewer",
                (
                    Param("maxBlocks", 3, 0, help="blocks tolerated in the window"),
                    Param("days", 30, 1, help="window, counted back from now", maximum=366),
                ),
            ),
        )
    }
)


@dataclass(frozen=True)
class RuleSettings:
    name: str
    enabled: bool = True
    shadow: bool = False
    params: Mapping[str, float] = field(default_factory=dict)
    #: What `params` are when the program never changed them.
    defaults: Mapping[str, float] = field(default_factory=dict)

    def __getitem__(self, param: str) -> float:
        return self.params[param]


def defaults(name: str, kind: str) -> RuleSettings:
    params = {p.name: p.default_for(kind) for p in SPECS[name].params}
    return RuleSettings(name, params=params, defaults=params)


@dataclass(frozen=True)
class FraudConfig:
    rules: Mapping[str, RuleSettings]
    #: The program's calendar (settings.timezone, UTC by default): the days of the daily rules.
    zone: ZoneInfo = UTC_ZONE

    @classmethod
    def default(cls, kind: str = ProgramKind.B2C, zone: ZoneInfo = UTC_ZONE) -> FraudConfig:
        return cls({name: defaults(name, kind) for name in SPECS}, zone)

    def __getitem__(self, name: str) -> RuleSettings:
        return self.rules[name]

    def with_rule(self, settings: RuleSettings) -> FraudConfig:
        return FraudConfig({**self.rules, settings.name: settings}, self.zone)


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def spec_of(name: str) -> RuleSpec:
    spec = SPECS.get(name)
    if spec is None:
        raise InvalidInput(f"rule: {name[:70]!r} is not one of {', '.join(SPECS)}")
    return spec


def parse_params(name: str, given: object, base: Mapping[str, float]) -> dict[str, float]:
    """Validate `given` against the rule's parameters; the ones not given keep their `base` value."""
    spec = spec_of(name)
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise InvalidInput(f"params: expected a JSON object, got {type(given).__name__}")
    known = {p.name: p for p in spec.params}
    unknown = sorted(set(given) - set(known))
    if unknown:
        accepted = ", ".join(known) or "none"
        raise InvalidInput(f"params: {name} has no parameter {unknown[0]!r} (accepted: {accepted})")
    params = dict(base)
    for key, value in given.items():
        param = known[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"params.{key}: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise InvalidInput(f"params.{key}: expected a finite number, got {value}")
        if param.integer and value != int(value):
            raise InvalidInput(f"params.{key}: expected a whole number, got {value}")
        if not param.minimum <= value <= param.maximum:
            raise InvalidInput(
                f"params.{key}: must be between {_number(param.minimum)} and {_number(param.maximum)}, "
                f"got {_number(value)}"
            )
        params[key] = int(value) if param.integer else float(value)
    if name == "velocity" and params["blockAbove"] < params["reviewAbove"]:
        raise InvalidInput(
            f"params.blockAbove: must be at least reviewAbove ({params['reviewAbove']:g}), "
            f"got {params['blockAbove']:g}"
        )
    return params


async def load_config(session: AsyncSession, program_id: int) -> FraudConfig:
    rows = (
        await session.execute(select(FraudRuleSetting).where(FraudRuleSetting.program_id == program_id))
    ).scalars()
    program = (
        await session.execute(select(Program.kind, Program.settings).where(Program.id == program_id))
    ).first()
    kind, settings = program if program is not None else (ProgramKind.B2C, {})
    config = FraudConfig.default(kind, program_timezone(settings))
    for row in rows:
        if row.rule in SPECS:  # a rule retired by an upgrade keeps its row but no longer runs
            base = config[row.rule]
            params = parse_params(row.rule, row.params, base.defaults)
            config = config.with_rule(RuleSettings(row.rule, row.enabled, row.shadow, params, base.defaults))
    return config
