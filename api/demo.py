"""The demo program behind `make demo`: members, a history of events, an admin and an API key."""

from __future__ import annotations

import random
import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from api.runtime import Services
from domain.auth.scopes import Scope
from domain.campaigns.definitions import TriggerDraft
from domain.errors import NotFound
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from domain.segments.service import SegmentDraft
from domain.segments.templates import TEMPLATES
from gamification.challenges.definitions import ChallengeDraft
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope
from gamification.periods import PeriodKind
from gamification.rewards.catalogue import RewardDraft
from gamification.rewards.windows import WindowSpec

PROGRAM_KEY = "demo"
#: The key the demo prints for the dashboard: it reads segments and boards, and changes nothing.
READ_ONLY_SCOPES = frozenset({Scope.SEGMENTS_READ, Scope.LEADERBOARDS_READ})
ADMIN_EMAIL = "admin@demo.local"
CITIES = ["Istanbul", "Berlin", "Lisbon", "Austin", "Osaka"]

#: The shipped trigger flows (docs/triggers.md): segment key -> its triggers.
DEMO_FLOWS: dict[str, list[TriggerDraft]] = {
    # welcome bonus: members entering NEW get 100 points and a welcome message
    "new_members": [
        TriggerDraft("ENTER", "AWARD_POINTS", points=100, reason="welcome bonus"),
        TriggerDraft("ENTER", "SEND_MESSAGE", template="welcome"),
    ],
    # win-back: entering at-risk pays 5 % of lifetime purchases (50 to 500 points) and says so
    "at_risk": [
        TriggerDraft(
            "ENTER",
            "AWARD_POINTS",
            percent_of_lifetime_value=Decimal(5),
            min_points=50,
            max_points=500,
            reason="win-back reward",
        ),
        TriggerDraft("ENTER", "SEND_MESSAGE", template="win_back"),
    ],
    # VIP status: a message and a bonus on entering, a note on leaving
    "vip": [
        TriggerDraft("ENTER", "SEND_MESSAGE", template="vip_welcome"),
        TriggerDraft("ENTER", "AWARD_POINTS", points=250, reason="VIP welcome"),
        TriggerDraft("LEAVE", "SEND_MESSAGE", template="vip_farewell"),
    ],
}


async def seed_demo(services: Services, data_dir: Path) -> dict[str, Any]:
    """Seed once; later runs return the credentials kept in data_dir/demo-credentials.json."""
    path = data_dir / "demo-credentials.json"
    try:
        await services.programs.get_by_key(PROGRAM_KEY)
    except NotFound:
        pass
    else:
        if path.exists():
            stored: dict[str, Any] = orjson.loads(path.read_bytes())
            return stored
        raise NotFound(f"the demo program exists but {path} is gone: delete ./var and run `make demo` again")

    program = await services.programs.create_program(PROGRAM_KEY, "Demo Coffee Club", "B2C")
    await services.programs.set_earning_rule(program.id, "login", None, 1)
    await _seed_gamification(services, program.id)  # before the history: challenges pay as it is recorded
    rng = random.Random(7)
    now = services.clock.now()
    members = [
        MemberUpsert(
            external_id=f"cust-{n:03d}",
            attributes={
                "city": rng.choice(CITIES),
                "gender": rng.choice(["F", "M", "X"]),
                "birthDate": f"{rng.randint(1960, 2005)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "device": {
                    "os": rng.choice(["iOS", "Android"]),
                    "appVersion": rng.choice(["4.2", "4.9", "5.1", "6.0"]),
                },
                "preferences": {"push": rng.random() < 0.7},
            },
            channels=rng.sample(["PUSH", "EMAIL", "SMS", "IN_APP"], k=2),
            joined_at=now - timedelta(days=rng.randint(1, 400)),
        )
        for n in range(1, 61)
    ]
    await services.members.upsert_members(program.id, members)
    events: list[EventDraft] = []
    for n, member in enumerate(members):
        activity = rng.choice([0.02, 0.1, 0.3, 0.95])  # lapsed, occasional, regular, daily
        for day in range(90, -1, -1):
            at = now - timedelta(days=day, minutes=rng.randint(0, 600))
            if rng.random() < activity:
                events.append(EventDraft(f"demo-v-{n}-{day}", member.external_id, "visit", at, None, {}))
            if rng.random() < activity:
                amount = Decimal(rng.randint(8000, 90000)) / 100
                events.append(
                    EventDraft(
                        f"demo-p-{n}-{day}",
                        member.external_id,
                        "purchase",
                        at,
                        amount,
                        {"category": rng.choice(["coffee", "beans", "pastry"]), "channel": "POS"},
                    )
                )
            if n % 17 == 0 and day % 30 == 0:  # a few members break the house rules
                events.append(
                    EventDraft(f"demo-c-{n}-{day}", member.external_id, "compliance_violation", at, None, {})
                )
            if rng.random() < activity * 2:
                events.append(
                    EventDraft(f"demo-l-{n}-{day}", member.external_id, "login", at, None, {"os": "app"})
                )
    for start in range(0, len(events), 500):
        await services.events.record_events(program.id, events[start : start + 500])
    for template in TEMPLATES:
        if template.audience == "B2C":
            draft = SegmentDraft(
                template.key,
                template.name,
                template.kind,
                rule=template.rule,
                applies_tag=template.applies_tag,
            )
            await services.segments.create(program.id, draft)
    await services.segments.create(
        program.id, SegmentDraft("new_members", "New members", "DYNAMIC", rule='lifecycle = "NEW"')
    )
    for segment_key, triggers in DEMO_FLOWS.items():  # they act on changes from here on
        await services.campaigns.set_triggers(program.id, segment_key, triggers)
    await services.segments.recompute(program.id)

    password = secrets.token_urlsafe(12)
    admin = await services.auth.create_admin(PROGRAM_KEY, ADMIN_EMAIL, password)
    key = await services.auth.create_api_key(PROGRAM_KEY, "demo POS", None)
    read_only = await services.auth.create_api_key(PROGRAM_KEY, "demo dashboard", READ_ONLY_SCOPES)
    credentials = {
        "program": PROGRAM_KEY,
        "admin": {
            "email": admin.email,
            "password": password,
            "totpSecret": admin.totp_secret,
            "provisioningUri": admin.provisioning_uri,
        },
        "apiKey": key.key,
        "readOnlyKey": read_only.key,
        "members": len(members),
        "events": len(events),
    }
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - CLI start-up, see above
    path.write_bytes(orjson.dumps(credentials, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)
    return credentials


async def _seed_gamification(services: Services, program_id: int) -> None:
    """A visits board beside the built-in `points`, a weekly challenge, and two rewards, the
    tumbler reserved for this month's top 10 during its first day on sale."""
    visits = BoardDefinition(
        "visits",
        "Most visits",
        BoardMetric.EVENT_COUNT,
        "visit",
        BoardScope.PROGRAM,
        None,
        (PeriodKind.ALL_TIME, PeriodKind.MONTHLY, PeriodKind.WEEKLY),
    )
    await services.leaderboards.set_board(program_id, visits)
    await services.challenges.set_challenge(
        program_id, ChallengeDraft("weekly-regular", "Three visits a week", "visit", 3, "WEEKLY", 30)
    )
    await services.rewards.set_reward(
        program_id, RewardDraft("free-coffee", "Free coffee", "Any size, any blend", 100, 500, True)
    )
    await services.rewards.set_reward(
        program_id, RewardDraft("tumbler", "Club tumbler", "Limited edition", 400, 20, True)
    )
    now = services.clock.now()
    window = WindowSpec("points", PeriodKind.MONTHLY, 10, now, now + timedelta(days=1))
    await services.rewards.set_window(program_id, "tumbler", window)
