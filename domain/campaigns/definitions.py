"""Trigger definitions: the vocabularies, the validation of an admin's input, the bonus sizing.

Pure: no I/O. Every fault names its field as `triggers[i].field`, so a client can
point at the exact input that was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from domain.db.types import units_to_amount
from domain.enums import Channel
from domain.errors import InvalidInput
from domain.programs.service import validate_key

MAX_TRIGGERS_PER_SEGMENT = 20
MAX_BONUS_POINTS = 10**9
MAX_REASON = 200
TEMPLATE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
DEFAULT_BONUS_REASON = "segment bonus"


class TriggerOn(StrEnum):
    ENTER = "ENTER"
    LEAVE = "LEAVE"


class TriggerAction(StrEnum):
    AWARD_POINTS = "AWARD_POINTS"
    ADD_TAG = "ADD_TAG"
    REMOVE_TAG = "REMOVE_TAG"
    SEND_MESSAGE = "SEND_MESSAGE"
    CALL_WEBHOOK = "CALL_WEBHOOK"
    #: Issue one code of a coupon pool to the member (none left: logged, the other actions still run)
    ISSUE_COUPON = "ISSUE_COUPON"


#: The stored `fires_on` of each TriggerOn: the change-log vocabulary.
FIRES_ON = {TriggerOn.ENTER: "ENTERED", TriggerOn.LEAVE: "LEFT"}

#: A stored SEND_MESSAGE parameter from before consent (issue 18): ignored when read back, never sent on.
RETIRED_PARAMS = frozenset({"fallbackChannel"})

#: The input fields each action reads; any other field given is refused.
FIELDS: dict[TriggerAction, frozenset[str]] = {
    TriggerAction.AWARD_POINTS: frozenset(
        {"points", "percentOfLifetimeValue", "minPoints", "maxPoints", "reason"}
    ),
    TriggerAction.ADD_TAG: frozenset({"tag"}),
    TriggerAction.REMOVE_TAG: frozenset({"tag"}),
    TriggerAction.SEND_MESSAGE: frozenset({"template", "preferredChannels"}),
    TriggerAction.CALL_WEBHOOK: frozenset({"webhookKey"}),
    TriggerAction.ISSUE_COUPON: frozenset({"couponPoolKey"}),
}


@dataclass(frozen=True)
class TriggerDraft:
    """One trigger as an admin gives it; fields an action does not read stay None."""

    on: str
    action: str
    points: int | None = None
    percent_of_lifetime_value: Decimal | None = None
    min_points: int | None = None
    max_points: int | None = None
    reason: str | None = None
    tag: str | None = None
    template: str | None = None
    #: SEND_MESSAGE: the channels to prefer, in order, among those the member accepted.
    preferred_channels: tuple[str, ...] | None = None
    webhook_key: str | None = None
    coupon_pool_key: str | None = None

    def given(self) -> dict[str, Any]:
        """The fields that were given, by their API names."""
        values = {
            "points": self.points,
            "percentOfLifetimeValue": self.percent_of_lifetime_value,
            "minPoints": self.min_points,
            "maxPoints": self.max_points,
            "reason": self.reason,
            "tag": self.tag,
            "template": self.template,
            "preferredChannels": self.preferred_channels,
            "webhookKey": self.webhook_key,
            "couponPoolKey": self.coupon_pool_key,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class TriggerSpec:
    """A validated trigger: what the table stores."""

    fires_on: str
    action: TriggerAction
    params: dict[str, Any]


def validate_triggers(drafts: Sequence[TriggerDraft]) -> list[TriggerSpec]:
    if len(drafts) > MAX_TRIGGERS_PER_SEGMENT:
        raise InvalidInput(f"triggers: at most {MAX_TRIGGERS_PER_SEGMENT} per segment, got {len(drafts)}")
    return [validate_trigger(i, draft) for i, draft in enumerate(drafts)]


def validate_trigger(i: int, draft: TriggerDraft) -> TriggerSpec:
    where = f"triggers[{i}]"
    if draft.on not in TriggerOn.__members__:
        raise InvalidInput(f"{where}.on: {draft.on!r} is not one of ENTER, LEAVE")
    if draft.action not in TriggerAction.__members__:
        known = ", ".join(TriggerAction)
        raise InvalidInput(f"{where}.action: {draft.action!r} is not one of {known}")
    action = TriggerAction(draft.action)
    given = draft.given()
    for name in sorted(set(given) - FIELDS[action]):
        raise InvalidInput(f"{where}.{name}: not used by {action}")
    params: dict[str, Any]
    if action is TriggerAction.AWARD_POINTS:
        params = _award_params(where, draft)
    elif action in (TriggerAction.ADD_TAG, TriggerAction.REMOVE_TAG):
        if draft.tag is None:
            raise InvalidInput(f"{where}.tag: required by {action}")
        params = {"tag": validate_key(draft.tag, f"{where}.tag")}
    elif action is TriggerAction.SEND_MESSAGE:
        if draft.template is None or not TEMPLATE.fullmatch(draft.template):
            raise InvalidInput(
                f"{where}.template: required by SEND_MESSAGE, a key matching [a-z][a-z0-9_.-]{{0,63}}"
            )
        params = {"template": draft.template}
        if draft.preferred_channels:
            params["preferredChannels"] = _channels(f"{where}.preferredChannels", draft.preferred_channels)
    elif action is TriggerAction.ISSUE_COUPON:
        if draft.coupon_pool_key is None:
            raise InvalidInput(f"{where}.couponPoolKey: required by ISSUE_COUPON")
        params = {"pool": validate_key(draft.coupon_pool_key, f"{where}.couponPoolKey")}
    else:
        if draft.webhook_key is None:
            raise InvalidInput(f"{where}.webhookKey: required by CALL_WEBHOOK")
        params = {"webhook": validate_key(draft.webhook_key, f"{where}.webhookKey")}
    return TriggerSpec(FIRES_ON[TriggerOn(draft.on)], action, params)


def _award_params(where: str, draft: TriggerDraft) -> dict[str, Any]:
    if (draft.points is None) == (draft.percent_of_lifetime_value is None):
        raise InvalidInput(f"{where}: AWARD_POINTS needs exactly one of points, percentOfLifetimeValue")
    reason = (draft.reason or DEFAULT_BONUS_REASON).strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput(f"{where}.reason: must be 1 to {MAX_REASON} characters")
    if draft.points is not None:
        if draft.min_points is not None or draft.max_points is not None:
            name = "minPoints" if draft.min_points is not None else "maxPoints"
            raise InvalidInput(f"{where}.{name}: only with percentOfLifetimeValue")
        _positive(f"{where}.points", draft.points)
        return {"points": draft.points, "reason": reason}
    percent: object = draft.percent_of_lifetime_value  # the lenient Decimal scalar may hand over raw text
    if not isinstance(percent, Decimal) or not _is_percent(percent):
        raise InvalidInput(
            f"{where}.percentOfLifetimeValue: must be above 0 and at most 100, with at most 4 decimals"
        )
    params: dict[str, Any] = {"percent": str(percent.normalize()), "reason": reason}
    if draft.min_points is not None:
        _positive(f"{where}.minPoints", draft.min_points, zero=True)
        params["min"] = draft.min_points
    if draft.max_points is not None:
        _positive(f"{where}.maxPoints", draft.max_points)
        params["max"] = draft.max_points
    if draft.min_points is not None and draft.max_points is not None and draft.min_points > draft.max_points:
        raise InvalidInput(f"{where}.maxPoints: must not be below minPoints ({draft.min_points})")
    return params


def _channels(field: str, channels: Sequence[str]) -> list[str]:
    known = ", ".join(Channel)
    for j, channel in enumerate(channels):
        if channel not in Channel.__members__:
            raise InvalidInput(f"{field}[{j}]: {channel!r} is not one of {known}")
        if channel in channels[:j]:
            raise InvalidInput(f"{field}[{j}]: {channel} is listed twice")
    return list(channels)


def _is_percent(value: Decimal) -> bool:
    try:
        return value.is_finite() and 0 < value <= 100 and value == value.quantize(Decimal("0.0001"))
    except InvalidOperation:
        return False


def _positive(field: str, value: int, *, zero: bool = False) -> None:
    low = 0 if zero else 1
    if not low <= value <= MAX_BONUS_POINTS:
        kind = "a non-negative" if zero else "a positive"
        raise InvalidInput(f"{field}: must be {kind} integer up to {MAX_BONUS_POINTS}, got {value}")


def bonus_points(params: dict[str, Any], lifetime_units: int) -> int:
    """The points an AWARD_POINTS trigger gives a member whose lifetime amount is `lifetime_units`.

    `lifetime_units` is the accepted purchase amount in scaled integer units
    (domain.db.types.AMOUNT_SCALE); a percentage bonus is floored, then clamped.
    """
    if "points" in params:
        return int(params["points"])
    raw = units_to_amount(lifetime_units) * Decimal(params["percent"]) / 100
    points = int(raw.to_integral_value(rounding=ROUND_FLOOR))
    if "min" in params:
        points = max(points, int(params["min"]))
    if "max" in params:
        points = min(points, int(params["max"]))
    return points


def describe(fires_on: str, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """A stored trigger back in the API's field names (the inverse of validation)."""
    on = TriggerOn.ENTER if fires_on == "ENTERED" else TriggerOn.LEAVE
    fields: dict[str, Any] = {"on": on, "action": TriggerAction(action)}
    renames = {
        "percent": "percentOfLifetimeValue",
        "min": "minPoints",
        "max": "maxPoints",
        "webhook": "webhookKey",
        "pool": "couponPoolKey",
    }
    for name, value in params.items():
        if name in RETIRED_PARAMS:
            continue
        fields[renames.get(name, name)] = Decimal(value) if name == "percent" else value
    return fields
