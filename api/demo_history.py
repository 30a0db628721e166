"""The demo's members and their 90 days of history, generated from a fixed seed (pure, no I/O).

Members follow one of a few habits, so that every feature has something to show: daily
regulars fill the VIP segment and the boards, weekly and occasional guests sit between, and
lapsing guests stop coming on some day, which moves them into at-risk and then lost and gives
the churn model both outcomes to learn from. `held_accruals` are the few events the fraud
rules hold for review.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert

HISTORY_DAYS = 90
MEMBERS = 120
CITIES = ["Istanbul", "Berlin", "Lisbon", "Austin", "Osaka"]


@dataclass(frozen=True)
class Habit:
    name: str
    #: Chance per day of a visit, a purchase and an app login.
    visit: float
    purchase: float
    login: float
    #: Of the members, roughly this share has the habit.
    share: float


HABITS = (
    Habit("daily", 0.9, 0.75, 0.95, 0.12),
    Habit("regular", 0.45, 0.35, 0.6, 0.22),
    Habit("weekly", 0.2, 0.14, 0.3, 0.22),
    Habit("occasional", 0.07, 0.05, 0.1, 0.2),
    Habit("lapsing", 0.45, 0.35, 0.6, 0.24),  # regular until `lapses_on`, then gone
)


@dataclass(frozen=True)
class DemoMember:
    upsert: MemberUpsert
    habit: Habit
    #: Days ago the member stopped coming (lapsing habit only).
    lapses_days_ago: int | None

    @property
    def external_id(self) -> str:
        return self.upsert.external_id

    @property
    def joined_at(self) -> datetime:
        assert self.upsert.joined_at is not None
        return self.upsert.joined_at


def demo_members(rng: random.Random, now: datetime) -> list[DemoMember]:
    """`cust-001` .. `cust-120`; cust-001 is a daily regular who joined long ago (the README's examples)."""
    members = []
    for n in range(1, MEMBERS + 1):
        habit = HABITS[0] if n == 1 else rng.choices(HABITS, weights=[h.share for h in HABITS])[0]
        joined_days_ago = 400 if n == 1 else rng.randint(1, 400)
        upsert = MemberUpsert(
            external_id=f"cust-{n:03d}",
            attributes={
                "city": rng.choice(CITIES),
                "gender": rng.choice(["F", "M", "X"]),
                "birthDate": f"{rng.randint(1960, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "device": {
                    "os": rng.choice(["iOS", "Android"]),
                    "appVersion": rng.choice(["4.2", "4.9", "5.1", "10.2"]),  # 10.2 is not below 5.0
                },
                "preferences": {"push": rng.random() < 0.7},
            },
            channels=rng.sample(["PUSH", "EMAIL", "SMS", "IN_APP"], k=2),
            joined_at=now - timedelta(days=joined_days_ago, minutes=rng.randint(0, 600)),
        )
        lapses = rng.randint(10, 75) if habit.name == "lapsing" else None
        members.append(DemoMember(upsert, habit, lapses))
    return members


#: Who refers whom in the demo: members joining 40 to 80 days ago who buy at least weekly signed up
#: with cust-001's referral code (so their referrals complete within the history).
REFERRER = "cust-001"
REFERRED = 3


def referred_members(members: list[DemoMember], now: datetime) -> dict[str, str]:
    """referred externalId -> its referrer's externalId, chosen from the members' join dates."""
    chosen = [
        m.external_id
        for m in members
        if 40 <= (now - m.joined_at).days <= 80 and m.habit.purchase >= 0.14 and m.lapses_days_ago is None
    ]
    return dict.fromkeys(chosen[:REFERRED], REFERRER)


def day_events(
    members: list[DemoMember], n_day: int, day_end: datetime, rng: random.Random
) -> list[EventDraft]:
    """The events of the day that ends at `day_end`, `n_day` days before today, of members who had joined."""
    events: list[EventDraft] = []
    for n, member in enumerate(members):
        if member.lapses_days_ago is not None and n_day < member.lapses_days_ago:
            continue
        habit = member.habit
        at = day_end - timedelta(minutes=rng.randint(0, 600))
        if at <= member.joined_at:
            continue
        if rng.random() < habit.visit:
            events.append(EventDraft(f"demo-v-{n}-{n_day}", member.external_id, "visit", at, None, {}))
        if rng.random() < habit.purchase:
            amount = Decimal(rng.randint(8000, 90000)) / 100
            category = rng.choice(["coffee", "beans", "pastry"])
            # each member mostly buys at its home store (favourite_store_s1), sometimes elsewhere
            store = f"S{n % 3 + 1}" if n_day % 4 else f"S{(n + n_day) % 3 + 1}"
            properties = {"category": category, "channel": "POS", "store": store}
            events.append(
                EventDraft(f"demo-p-{n}-{n_day}", member.external_id, "purchase", at, amount, properties)
            )
        if n % 17 == 0 and n_day % 30 == 0:  # a few members break the house rules
            events.append(
                EventDraft(f"demo-c-{n}-{n_day}", member.external_id, "compliance_violation", at, None, {})
            )
        if rng.random() < habit.login:
            events.append(
                EventDraft(f"demo-l-{n}-{n_day}", member.external_id, "login", at, None, {"os": "app"})
            )
    return events


def held_accruals(members: list[DemoMember], now: datetime) -> list[EventDraft]:
    """Events of the last hour that the default fraud rules hold for review: two purchases above
    the single-accrual cap (5,000 points) and visits of five members from one kiosk (a device
    shared by more than 3 members: the 4th and 5th are held)."""
    regulars = [m.external_id for m in members if m.habit.name in ("daily", "regular")]
    big = [
        EventDraft(
            f"demo-held-p{i}",
            external_id,
            "purchase",
            now - timedelta(minutes=50 - i),
            Decimal(amount),
            {"category": "catering", "channel": "POS"},
        )
        for i, (external_id, amount) in enumerate(zip(regulars[1:3], ("6400.00", "5800.00"), strict=True))
    ]
    kiosk = [
        EventDraft(
            f"demo-held-k{i}",
            external_id,
            "visit",
            now - timedelta(minutes=40 - i),
            None,
            {"deviceId": "kiosk-7"},
        )
        for i, external_id in enumerate(regulars[3:8])
    ]
    return big + kiosk
