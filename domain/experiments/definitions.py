"""Experiment definitions: the vocabularies and the validation of an admin's input.

Pure: no I/O (the service checks that the segment and rewards exist). Every fault
names its field, e.g. `variants[1].weight: must be between 1 and 1000, got 0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from domain.campaigns.definitions import TEMPLATE
from domain.enums import Channel
from domain.errors import InvalidInput
from domain.events.validation import EVENT_TYPE
from domain.experiments.assignment import HOLDOUT
from domain.programs.service import validate_key

MAX_NAME = 200
MAX_VARIANTS = 10
MAX_WEIGHT = 1000
MAX_HOLDOUT_PERCENT = 50
MAX_CONVERSION_DAYS = 365
MAX_BONUS_POINTS = 10**9


class ActionType(StrEnum):
    """What a variant does to a member at exposure (the holdout does nothing)."""

    BONUS_POINTS = "BONUS_POINTS"
    MESSAGE = "MESSAGE"
    REWARD_OFFER = "REWARD_OFFER"
    #: One code of a coupon pool, issued at exposure (none left: logged, the exposure stands)
    ISSUE_COUPON = "ISSUE_COUPON"
    NONE = "NONE"


#: The action fields each type reads; any other field given is refused.
FIELDS: dict[ActionType, frozenset[str]] = {
    ActionType.BONUS_POINTS: frozenset({"points"}),
    ActionType.MESSAGE: frozenset({"template", "channel"}),
    ActionType.REWARD_OFFER: frozenset({"rewardKey"}),
    ActionType.ISSUE_COUPON: frozenset({"couponPoolKey"}),
    ActionType.NONE: frozenset(),
}


@dataclass(frozen=True)
class Action:
    type: str
    points: int | None = None
    template: str | None = None
    channel: str | None = None
    reward_key: str | None = None
    coupon_pool_key: str | None = None

    def stored(self) -> dict[str, Any]:
        """The JSON kept in `experiments.variants`: the type and the fields given."""
        given = {
            "points": self.points,
            "template": self.template,
            "channel": self.channel,
            "rewardKey": self.reward_key,
            "couponPoolKey": self.coupon_pool_key,
        }
        return {"type": self.type, **{k: v for k, v in given.items() if v is not None}}

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Action:
        return cls(
            stored["type"],
            stored.get("points"),
            stored.get("template"),
            stored.get("channel"),
            stored.get("rewardKey"),
            stored.get("couponPoolKey"),
        )


@dataclass(frozen=True)
class Variant:
    key: str
    weight: int
    action: Action

    def stored(self) -> dict[str, Any]:
        return {"key": self.key, "weight": self.weight, "action": self.action.stored()}

    @classmethod
    def of(cls, stored: dict[str, Any]) -> Variant:
        return cls(stored["key"], int(stored["weight"]), Action.of(stored["action"]))


@dataclass(frozen=True)
class ExperimentDraft:
    """An experiment as an admin gives it; `control` None means the holdout if any, else the first variant."""

    key: str
    name: str
    segment_key: str
    goal_event_type: str
    conversion_days: int
    holdout_percent: int
    variants: Sequence[Variant]
    control: str | None = None


def validate_experiment(draft: ExperimentDraft) -> ExperimentDraft:
    """The draft, name trimmed and control chosen; BAD_USER_INPUT naming the first faulty field."""
    validate_key(draft.key, "key")
    name = draft.name.strip()
    if not name:
        raise InvalidInput("name: must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"name: longer than {MAX_NAME} characters")
    validate_key(draft.segment_key, "segmentKey")
    if not EVENT_TYPE.match(draft.goal_event_type):
        raise InvalidInput(
            f"goalEventType: {draft.goal_event_type[:70]!r} does not match [a-z][a-z0-9_]{{0,63}}"
        )
    if not 1 <= draft.conversion_days <= MAX_CONVERSION_DAYS:
        raise InvalidInput(
            f"conversionDays: must be between 1 and {MAX_CONVERSION_DAYS}, got {draft.conversion_days}"
        )
    if not 0 <= draft.holdout_percent <= MAX_HOLDOUT_PERCENT:
        raise InvalidInput(
            f"holdoutPercent: must be between 0 and {MAX_HOLDOUT_PERCENT}, got {draft.holdout_percent}"
        )
    if not draft.variants:
        raise InvalidInput("variants: at least one variant is needed")
    if len(draft.variants) > MAX_VARIANTS:
        raise InvalidInput(f"variants: at most {MAX_VARIANTS}, got {len(draft.variants)}")
    if len(draft.variants) == 1 and draft.holdout_percent == 0:
        raise InvalidInput("variants: one variant needs a holdout (holdoutPercent > 0) to be compared with")
    seen: set[str] = set()
    for i, variant in enumerate(draft.variants):
        _check_variant(f"variants[{i}]", variant, seen)
    control = draft.control
    if control is None:
        control = HOLDOUT if draft.holdout_percent > 0 else draft.variants[0].key
    elif control == HOLDOUT:
        if draft.holdout_percent == 0:
            raise InvalidInput("controlVariant: 'holdout' needs holdoutPercent > 0")
    elif control not in seen:
        raise InvalidInput(f"controlVariant: {control[:70]!r} is not one of the variants' keys or 'holdout'")
    return ExperimentDraft(
        draft.key,
        name,
        draft.segment_key,
        draft.goal_event_type,
        draft.conversion_days,
        draft.holdout_percent,
        tuple(draft.variants),
        control,
    )


def _check_variant(field: str, variant: Variant, seen: set[str]) -> None:
    validate_key(variant.key, f"{field}.key")
    if variant.key == HOLDOUT:
        raise InvalidInput(f"{field}.key: 'holdout' is reserved for the holdout group")
    if variant.key in seen:
        raise InvalidInput(f"{field}.key: {variant.key!r} is used by another variant")
    seen.add(variant.key)
    if not 1 <= variant.weight <= MAX_WEIGHT:
        raise InvalidInput(f"{field}.weight: must be between 1 and {MAX_WEIGHT}, got {variant.weight}")
    action = variant.action
    if action.type not in ActionType.__members__:
        raise InvalidInput(f"{field}.action.type: {action.type[:40]!r} is not one of {', '.join(ActionType)}")
    kind = ActionType(action.type)
    for name in sorted(set(action.stored()) - {"type"} - FIELDS[kind]):
        raise InvalidInput(f"{field}.action.{name}: not used by {kind.value}")
    if kind == ActionType.BONUS_POINTS and not (
        action.points is not None and 1 <= action.points <= MAX_BONUS_POINTS
    ):
        raise InvalidInput(
            f"{field}.action.points: must be between 1 and {MAX_BONUS_POINTS}, got {action.points}"
        )
    if kind == ActionType.MESSAGE:
        if action.template is None or not TEMPLATE.fullmatch(action.template):
            raise InvalidInput(f"{field}.action.template: must match [a-z][a-z0-9_.-]{{0,63}}")
        if action.channel is not None and action.channel not in Channel.__members__:
            raise InvalidInput(f"{field}.action.channel: not one of {', '.join(Channel)}")
    if kind == ActionType.REWARD_OFFER:
        validate_key(action.reward_key or "", f"{field}.action.rewardKey")
    if kind == ActionType.ISSUE_COUPON:
        validate_key(action.coupon_pool_key or "", f"{field}.action.couponPoolKey")
