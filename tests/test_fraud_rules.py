"""The fraud rules (fraud/rules.py) in the real pipeline: each one tripped and just missed.

Every scenario records events through `services.events.record_events`, whose audit
is `fraud.default_auditor()`, and checks the outcome, the stored finding and where
the points went: a held accrual's points wait in pendingPoints, a blocked one's go
nowhere. Windows are measured on occurredAt, not on arrival, so history imports in
one batch are judged like the same events sent one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from api.runtime import Services
from domain.enums import AccrualStatus, EventStatus
from domain.events.service import EventOutcome
from domain.events.validation import EventDraft
from domain.members.service import MemberUpsert
from tests.support.fraud import (
    ACCEPTED,
    BLOCKED,
    DAY,
    HELD,
    at,
    configure,
    enrol,
    points,
    purchase,
    record_drafts,
    stored_findings,
)
from tests.support.graphql import ProgramFixture

DATE = DAY.date().isoformat()


def referral(external_id: str, referrer: str, referee: str, when: datetime | None = None) -> EventDraft:
    """A referral earning the default 100 points."""
    return EventDraft(external_id, referrer, "referral", when or at(12), None, {"refereeExternalId": referee})


def statuses(outcomes: Sequence[EventOutcome]) -> list[EventStatus]:
    return [o.status for o in outcomes]


# -- duplicate_receipt ------------------------------------------------------------------------


async def test_a_receipt_used_again_is_blocked(services: Services, program: ProgramFixture) -> None:
    # given a purchase on receipt 1001 (sent as a number) and one on receipt R-2
    await enrol(services, program, "m1", "m2")
    first = await record_drafts(
        services,
        program,
        purchase("p1", "m1", at(10), 50, {"receiptId": 1001}),
        purchase("p2", "m1", at(11), 30, {"receiptId": "R-2"}),
    )
    assert first == [EventOutcome("p1", ACCEPTED, 50), EventOutcome("p2", ACCEPTED, 30)]

    # when another member's later batch claims receipt "1001" again, and a new receipt R-3
    outcomes = await record_drafts(
        services,
        program,
        purchase("p3", "m2", at(12), 70, {"receiptId": " 1001 "}),
        purchase("p4", "m2", at(13), 20, {"receiptId": "R-3"}),
    )

    # then the reused receipt is blocked, its points go nowhere; the new receipt is accepted
    assert outcomes == [
        EventOutcome("p3", BLOCKED, 0, "duplicate_receipt: receiptId 1001 was already used by event p1"),
        EventOutcome("p4", ACCEPTED, 20),
    ]
    assert await points(services, program, "m2") == (20, 0)
    assert await stored_findings(services, program) == [
        (
            "p3",
            "duplicate_receipt",
            "BLOCK",
            "receiptId 1001 was already used by event p1",
            False,
            AccrualStatus.REJECTED.value,
        )
    ]


async def test_a_receipt_repeated_within_one_batch_is_blocked(
    services: Services, program: ProgramFixture
) -> None:
    # given one member
    await enrol(services, program, "m1")
    # when one batch carries receipt R-1 twice
    outcomes = await record_drafts(
        services,
        program,
        purchase("p1", "m1", at(10), 40, {"receiptId": "R-1"}),
        purchase("p2", "m1", at(10, 5), 40, {"receiptId": "R-1"}),
    )
    # then the first is accepted and the second blocked
    assert outcomes == [
        EventOutcome("p1", ACCEPTED, 40),
        EventOutcome("p2", BLOCKED, 0, "duplicate_receipt: receiptId R-1 was already used by event p1"),
    ]
    assert await points(services, program, "m1") == (40, 0)
    assert [f[:3] for f in await stored_findings(services, program)] == [("p2", "duplicate_receipt", "BLOCK")]


# -- velocity ---------------------------------------------------------------------------------


async def test_velocity_holds_the_21st_event_in_an_hour_sent_in_separate_batches(
    services: Services, program: ProgramFixture
) -> None:
    # given 20 purchases within 38 minutes, sent in two batches: 20 is not above reviewAbove
    await enrol(services, program, "m1")
    drafts = [purchase(f"p{i}", "m1", at(10, 2 * i), 5) for i in range(1, 21)]
    assert statuses(await record_drafts(services, program, *drafts[:10])) == [ACCEPTED] * 10
    assert statuses(await record_drafts(services, program, *drafts[10:])) == [ACCEPTED] * 10
    assert await stored_findings(services, program) == []

    # when the 21st arrives in a third batch, within the same hour
    outcomes = await record_drafts(services, program, purchase("p21", "m1", at(10, 50), 7))

    # then it is held, its points pending
    detail = "21 point-earning events in 60 minutes (review above 20)"
    assert outcomes == [EventOutcome("p21", HELD, 0, f"velocity: {detail}")]
    assert await points(services, program, "m1") == (100, 7)
    assert await stored_findings(services, program) == [
        ("p21", "velocity", "REVIEW", detail, False, AccrualStatus.PENDING_REVIEW.value)
    ]


async def test_velocity_counts_occurred_at_in_one_batch_not_arrival(
    services: Services, program: ProgramFixture
) -> None:
    # given a history import of 21 purchases spread over two hours (6 minutes apart)
    await enrol(services, program, "m1", "m2")
    spread = [purchase(f"s{i}", "m1", at(10, 6 * i), 1) for i in range(21)]
    # and one of 21 purchases within 59 minutes, in the same batch
    burst = [purchase(f"b{i}", "m2", at(10, seconds=59 * 3 * i), 1) for i in range(21)]
    assert at(10, seconds=59 * 3 * 20) - at(10) == timedelta(minutes=59)

    # when both arrive together
    outcomes = await record_drafts(services, program, *spread, *burst)

    # then the spread one never has more than 20 in an hour; the burst holds its 21st
    detail = "21 point-earning events in 60 minutes (review above 20)"
    assert statuses(outcomes[:21]) == [ACCEPTED] * 21
    assert statuses(outcomes[21:41]) == [ACCEPTED] * 20
    assert outcomes[41] == EventOutcome("b20", HELD, 0, f"velocity: {detail}")
    assert await points(services, program, "m1") == (21, 0)
    assert await points(services, program, "m2") == (20, 1)
    assert await stored_findings(services, program) == [
        ("b20", "velocity", "REVIEW", detail, False, AccrualStatus.PENDING_REVIEW.value)
    ]


async def test_the_velocity_window_is_half_open_and_late_arrivals_count_by_occurred_at(
    services: Services, program: ProgramFixture
) -> None:
    # given 20 purchases from 10:00 to 10:57
    await enrol(services, program, "m1")
    assert (
        statuses(
            await record_drafts(
                services, program, *[purchase(f"p{i}", "m1", at(10, 3 * i), 2) for i in range(20)]
            )
        )
        == [ACCEPTED] * 20
    )

    # when one occurs at 11:00 sharp, 60 minutes after the first
    sharp = await record_drafts(services, program, purchase("at-11", "m1", at(11), 2))
    # then no window [s, s + 60 min) holds 21 of them
    assert sharp == [EventOutcome("at-11", ACCEPTED, 2)]

    # when a late-arriving event occurred at 10:59
    late = await record_drafts(services, program, purchase("at-10-59", "m1", at(10, 59), 2))
    # then [10:00, 11:00) now holds 21: it is held
    assert late == [
        EventOutcome("at-10-59", HELD, 0, "velocity: 21 point-earning events in 60 minutes (review above 20)")
    ]
    assert await points(services, program, "m1") == (42, 2)

    # given 21 events of m2 at 10:00 sharp (judged by externalId at equal times: q20 is the 21st, held)
    await enrol(services, program, "m2")
    burst = await record_drafts(
        services, program, *[purchase(f"q{i:02d}", "m2", at(10), 1) for i in range(21)]
    )
    assert statuses(burst) == [ACCEPTED] * 20 + [HELD]
    # when one occurs at 11:00 sharp
    after = await record_drafts(services, program, purchase("q-11", "m2", at(11), 1))
    # then the window [10:00, 11:00) does not contain it: it is accepted
    assert after == [EventOutcome("q-11", ACCEPTED, 1)]


async def test_velocity_blocks_the_61st_event_in_an_hour(services: Services, program: ProgramFixture) -> None:
    # given one member
    await enrol(services, program, "m1")
    # when 61 purchases of 2 points occur within 59 minutes (one history batch)
    drafts = [purchase(f"p{i}", "m1", at(10, seconds=59 * i), 2) for i in range(1, 62)]
    outcomes = await record_drafts(services, program, *drafts)

    # then 20 are accepted, the 21st to the 60th (60 is not above blockAbove) held, the 61st blocked
    assert outcomes[:20] == [EventOutcome(f"p{i}", ACCEPTED, 2) for i in range(1, 21)]
    assert outcomes[20:60] == [
        EventOutcome(f"p{i}", HELD, 0, f"velocity: {i} point-earning events in 60 minutes (review above 20)")
        for i in range(21, 61)
    ]
    block = "61 point-earning events in 60 minutes (block above 60)"
    assert outcomes[60] == EventOutcome("p61", BLOCKED, 0, f"velocity: {block}")
    # and the blocked 2 points are neither posted nor pending
    assert await points(services, program, "m1") == (40, 80)
    found = await stored_findings(services, program)
    assert len(found) == 41
    assert {(f[1], f[2], f[5]) for f in found[:40]} == {
        ("velocity", "REVIEW", AccrualStatus.PENDING_REVIEW.value)
    }
    assert found[40] == ("p61", "velocity", "BLOCK", block, False, AccrualStatus.REJECTED.value)


# -- single_accrual_cap -----------------------------------------------------------------------


async def test_one_accrual_above_the_cap_is_held(services: Services, program: ProgramFixture) -> None:
    # given the default cap of 5000 points per accrual
    await enrol(services, program, "m1")
    # when a purchase earns exactly 5000 and, the day before (under the daily cap), another 5001
    outcomes = await record_drafts(
        services, program, purchase("p1", "m1", at(9), 5000), purchase("p2", "m1", at(-14), 5001)
    )
    # then the first posts and the second is held
    assert outcomes == [
        EventOutcome("p1", ACCEPTED, 5000),
        EventOutcome("p2", HELD, 0, "single_accrual_cap: 5001 points in one accrual (cap 5000)"),
    ]
    assert await points(services, program, "m1") == (5000, 5001)
    assert await stored_findings(services, program) == [
        (
            "p2",
            "single_accrual_cap",
            "REVIEW",
            "5001 points in one accrual (cap 5000)",
            False,
            AccrualStatus.PENDING_REVIEW.value,
        )
    ]


# -- daily_points_cap -------------------------------------------------------------------------


async def test_the_accrual_that_passes_the_daily_cap_is_held(
    services: Services, program: ProgramFixture
) -> None:
    # given a daily cap of 100 and 100 points earned today in two batches (a blocked 40 does not count)
    await configure(services, program, "daily_points_cap", maxPoints=100)
    await enrol(services, program, "m1")
    assert statuses(
        await record_drafts(
            services,
            program,
            purchase("p1", "m1", at(8), 60, {"receiptId": "R"}),
            purchase("p1-again", "m1", at(9), 40, {"receiptId": "R"}),
        )
    ) == [ACCEPTED, BLOCKED]
    assert await record_drafts(services, program, purchase("p2", "m1", at(20), 40)) == [
        EventOutcome("p2", ACCEPTED, 40)
    ]

    # when one more point is earned that day, then one the next day, then another that day
    held = await record_drafts(services, program, purchase("p3", "m1", at(23, 59), 1))
    next_day = await record_drafts(services, program, purchase("p4", "m1", at(24), 100))
    again = await record_drafts(services, program, purchase("p5", "m1", at(0, 1), 2))

    # then the day's extra points are held (held points count towards the cap), the next day's post
    assert held == [
        EventOutcome(
            "p3", HELD, 0, f"daily_points_cap: 101 points on {DATE} with this accrual (100 before; cap 100)"
        )
    ]
    assert next_day == [EventOutcome("p4", ACCEPTED, 100)]
    assert again == [
        EventOutcome(
            "p5", HELD, 0, f"daily_points_cap: 103 points on {DATE} with this accrual (101 before; cap 100)"
        )
    ]
    assert await points(services, program, "m1") == (200, 3)
    assert [(f[0], f[1], f[2], f[5]) for f in await stored_findings(services, program)] == [
        ("p1-again", "duplicate_receipt", "BLOCK", AccrualStatus.REJECTED.value),
        ("p3", "daily_points_cap", "REVIEW", AccrualStatus.PENDING_REVIEW.value),
        ("p5", "daily_points_cap", "REVIEW", AccrualStatus.PENDING_REVIEW.value),
    ]


async def test_the_daily_cap_counts_days_in_the_program_timezone(
    services: Services, program: ProgramFixture
) -> None:
    # given a program in Tokyo (UTC+9) with a daily cap of 100
    await services.leaderboards.set_timezone(program.id, "Asia/Tokyo", actor="test")
    await configure(services, program, "daily_points_cap", maxPoints=100)
    await enrol(services, program, "m1")
    # when 100 points are earned at 20:00 UTC (05:00 the next day in Tokyo) and 1 at 10:00 UTC the next day
    first = await record_drafts(services, program, purchase("p1", "m1", at(20), 100))
    second = await record_drafts(services, program, purchase("p2", "m1", at(34), 1))
    # then both fall on the same Tokyo day, so the second is held
    tokyo_day = (DAY + timedelta(days=1)).date().isoformat()
    assert first == [EventOutcome("p1", ACCEPTED, 100)]
    assert second == [
        EventOutcome(
            "p2",
            HELD,
            0,
            f"daily_points_cap: 101 points on {tokyo_day} with this accrual (100 before; cap 100)",
        )
    ]
    # and an accrual at 14:59 UTC (23:59 Tokyo, the first day) posts: that day had nothing
    assert await record_drafts(services, program, purchase("p0", "m1", at(14, 59), 100)) == [
        EventOutcome("p0", ACCEPTED, 100)
    ]
    assert await points(services, program, "m1") == (200, 1)


# -- amount_outlier ---------------------------------------------------------------------------


async def test_an_amount_far_above_the_members_mean_is_held(
    services: Services, program: ProgramFixture
) -> None:
    # given three members with purchases of 10: ten each for m1 and m2, nine for m3
    await enrol(services, program, "m1", "m2", "m3")
    history = [
        purchase(f"{m}-{i}", m, at(8, i), 10)
        for m, count in (("m1", 10), ("m2", 10), ("m3", 9))
        for i in range(count)
    ]
    assert statuses(await record_drafts(services, program, *history)) == [ACCEPTED] * 29

    # when m1 spends 14 (4 standard deviations: the std of 0 is floored at minStd 1), m2 15, m3 100
    outcomes = await record_drafts(
        services,
        program,
        purchase("m1-big", "m1", at(12), 14),
        purchase("m2-big", "m2", at(12), 15),
        purchase("m3-big", "m3", at(12), 100),
        purchase("m2-again", "m2", at(13), "14.5"),
    )
    # and m2 spends 14.5 again in a later batch
    later = await record_drafts(services, program, purchase("m2-later", "m2", at(14), "14.5"))

    # then only m2's, 5 deviations above its mean, is held; m3 has fewer than minSamples (10) amounts
    detail = (
        "amount 15 is 5.0 standard deviations above the member's mean 10.00 "
        "of 10 purchase events in 90 days (limit 4)"
    )
    # (a held amount joins no mean: 14.5 stays 4.5 deviations above m2's)
    again = (
        "amount 14.5 is 4.5 standard deviations above the member's mean 10.00 "
        "of 10 purchase events in 90 days (limit 4)"
    )
    assert outcomes == [
        EventOutcome("m1-big", ACCEPTED, 14),
        EventOutcome("m2-big", HELD, 0, f"amount_outlier: {detail}"),
        EventOutcome("m3-big", ACCEPTED, 100),
        EventOutcome("m2-again", HELD, 0, f"amount_outlier: {again}"),
    ]
    assert later == [EventOutcome("m2-later", HELD, 0, f"amount_outlier: {again}")]
    assert await points(services, program, "m1") == (114, 0)
    assert await points(services, program, "m2") == (100, 15 + 14 + 14)
    assert await points(services, program, "m3") == (190, 0)
    pending = AccrualStatus.PENDING_REVIEW.value
    assert await stored_findings(services, program) == [
        ("m2-big", "amount_outlier", "REVIEW", detail, False, pending),
        ("m2-again", "amount_outlier", "REVIEW", again, False, pending),
        ("m2-later", "amount_outlier", "REVIEW", again, False, pending),
    ]


# -- shared_device ----------------------------------------------------------------------------


async def test_a_device_used_by_a_fourth_member_within_a_day_is_held(
    services: Services, program: ProgramFixture
) -> None:
    # given three members who used device d1 within three hours, each in its own batch
    await enrol(services, program, "m1", "m2", "m3", "m4")
    for i, member in enumerate(["m1", "m2", "m3"]):
        assert await record_drafts(
            services, program, purchase(f"p{i}", member, at(8 + i), 20, {"deviceId": "d1"})
        ) == [EventOutcome(f"p{i}", ACCEPTED, 20)]
    # and m1 using it again (still three members)
    assert statuses(
        await record_drafts(services, program, purchase("p1b", "m1", at(11), 5, {"deviceId": "d1"}))
    ) == [ACCEPTED]

    # when a fourth member uses it
    outcomes = await record_drafts(services, program, purchase("p3", "m4", at(12), 20, {"deviceId": "d1"}))

    # then that accrual is held
    detail = "deviceId d1 used by 4 members within 24 h (limit 3)"
    assert outcomes == [EventOutcome("p3", HELD, 0, f"shared_device: {detail}")]
    assert await points(services, program, "m4") == (0, 20)
    assert await stored_findings(services, program) == [
        ("p3", "shared_device", "REVIEW", detail, False, AccrualStatus.PENDING_REVIEW.value)
    ]


async def test_shared_device_windows_follow_occurred_at_in_one_batch(
    services: Services, program: ProgramFixture
) -> None:
    # given a history import where m1..m4 used device d2 ten hours apart: no 24 h holds four of them
    await enrol(services, program, "m1", "m2", "m3", "m4", "m5")
    drafts = [purchase(f"p{i}", f"m{i + 1}", at(10 * i), 20, {"deviceId": "d2"}) for i in range(4)]
    # and m5 at hour 25, arriving last: [10 h, 34 h) holds m2, m3, m5 and m4
    drafts.append(purchase("p-late", "m5", at(25), 20, {"deviceId": "d2"}))

    # when the batch is recorded
    outcomes = await record_drafts(services, program, *drafts)

    # then it is judged as it happened: m4's, at hour 30, is the fourth member in that window and held
    detail = "deviceId d2 used by 4 members within 24 h (limit 3)"
    assert outcomes == [
        *(EventOutcome(f"p{i}", ACCEPTED, 20) for i in range(3)),
        EventOutcome("p3", HELD, 0, f"shared_device: {detail}"),
        EventOutcome("p-late", ACCEPTED, 20),
    ]
    assert await points(services, program, "m4") == (0, 20)
    assert await stored_findings(services, program) == [
        ("p3", "shared_device", "REVIEW", detail, False, AccrualStatus.PENDING_REVIEW.value)
    ]


# -- self_referral ----------------------------------------------------------------------------


async def test_a_referral_between_members_sharing_a_device_phone_or_email_is_blocked(
    services: Services, program: ProgramFixture
) -> None:
    # given referrers and referees that share a device, a phone (formatted differently), an email (cased
    # differently), and a pair that shares nothing
    await enrol(
        services,
        program,
        MemberUpsert("dev-a"),
        MemberUpsert("dev-b", attributes={"deviceId": "phone-7"}),
        MemberUpsert("tel-a", attributes={"phone": "+90 555 123-45-67"}),
        MemberUpsert("tel-b", attributes={"phone": "+905551234567"}),
        MemberUpsert("mail-a", attributes={"email": "Ana@Example.COM"}),
        MemberUpsert("mail-b", attributes={"email": " ana@example.com"}),
        MemberUpsert(
            "ok-a", attributes={"email": "a@example.com", "phone": "+90 555 000 00 01", "deviceId": "x1"}
        ),
        MemberUpsert(
            "ok-b", attributes={"email": "b@example.com", "phone": "+90 555 000 00 02", "deviceId": "x2"}
        ),
    )
    # and the first referrer once used the referee's device (a purchase on phone-7)
    assert statuses(
        await record_drafts(services, program, purchase("buy", "dev-a", at(9), 10, {"deviceId": "phone-7"}))
    ) == [ACCEPTED]

    # when each referrer refers its referee, each in its own batch, and one refers itself
    outcomes = [
        (await record_drafts(services, program, referral(f"ref-{a}", a, b)))[0]
        for a, b in (
            ("dev-a", "dev-b"),
            ("tel-a", "tel-b"),
            ("mail-a", "mail-b"),
            ("ok-a", "ok-b"),
            ("ok-b", "ok-b"),
        )
    ]

    # then the sharing pairs and the self-referral are blocked, and the clean referral earns 100
    assert outcomes == [
        EventOutcome(
            "ref-dev-a", BLOCKED, 0, "self_referral: referrer and referee dev-b share deviceId phone-7"
        ),
        EventOutcome(
            "ref-tel-a", BLOCKED, 0, "self_referral: referrer and referee tel-b share phone +905551234567"
        ),
        EventOutcome(
            "ref-mail-a", BLOCKED, 0, "self_referral: referrer and referee mail-b share email ana@example.com"
        ),
        EventOutcome("ref-ok-a", ACCEPTED, 100),
        EventOutcome("ref-ok-b", BLOCKED, 0, "self_referral: member ok-b refers itself"),
    ]
    # and no blocked referral moved any points
    assert await points(services, program, "dev-a") == (10, 0)
    for member in ("tel-a", "mail-a", "ok-b"):
        assert await points(services, program, member) == (0, 0)
    assert await points(services, program, "ok-a") == (100, 0)
    assert [(f[0], f[1], f[2], f[4], f[5]) for f in await stored_findings(services, program)] == [
        (f"ref-{a}", "self_referral", "BLOCK", False, AccrualStatus.REJECTED.value)
        for a in ("dev-a", "tel-a", "mail-a", "ok-b")
    ]


# -- cashier_collusion ------------------------------------------------------------------------


async def test_the_11th_accrual_by_one_cashier_for_one_member_in_a_day_is_held(
    services: Services, program: ProgramFixture
) -> None:
    # given nine purchases of m1 credited by cashier c1 on one day (hours apart), a tenth blocked as a
    # duplicate receipt, one by cashier c2 and one the next day
    await enrol(services, program, "m1")
    nine = [
        purchase(f"c1-{i}", "m1", at(1 + 2 * i), 10, {"cashierId": "c1", "receiptId": i}) for i in range(9)
    ]
    others = [
        purchase("c1-dup", "m1", at(18), 10, {"cashierId": "c1", "receiptId": 0}),
        purchase("c2-0", "m1", at(21), 10, {"cashierId": "c2"}),
        purchase("c1-next", "m1", at(25), 10, {"cashierId": "c1"}),
    ]
    assert statuses(await record_drafts(services, program, *nine, *others)) == [ACCEPTED] * 9 + [
        BLOCKED,
        ACCEPTED,
        ACCEPTED,
    ]

    # when c1 credits m1 a 10th time that day (the blocked one does not count)
    tenth = await record_drafts(services, program, purchase("c1-9", "m1", at(19), 10, {"cashierId": "c1"}))
    # then it is accepted
    assert tenth == [EventOutcome("c1-9", ACCEPTED, 10)]

    # when c1 credits m1 an 11th time that day
    outcomes = await record_drafts(
        services, program, purchase("c1-10", "m1", at(23), 10, {"cashierId": "c1"})
    )

    # then it is held
    detail = f"cashierId c1 credited this member 11 times on {DATE} (limit 10)"
    assert outcomes == [EventOutcome("c1-10", HELD, 0, f"cashier_collusion: {detail}")]
    assert await points(services, program, "m1") == (120, 10)
    assert (await stored_findings(services, program))[1:] == [
        ("c1-10", "cashier_collusion", "REVIEW", detail, False, AccrualStatus.PENDING_REVIEW.value)
    ]


# -- shadow mode, disabled rules, severity ----------------------------------------------------


async def test_a_rule_in_shadow_mode_records_its_finding_and_changes_nothing(
    services: Services, program: ProgramFixture
) -> None:
    # given the single-accrual cap in shadow mode
    await services.fraud_settings.set_rule(program.id, "single_accrual_cap", shadow=True, actor="test")
    await enrol(services, program, "m1")
    # when an accrual passes the cap
    outcomes = await record_drafts(services, program, purchase("p1", "m1", at(10), 6000))
    # then it posts without a message, and the finding is stored marked shadow
    assert outcomes == [EventOutcome("p1", ACCEPTED, 6000, None)]
    assert await points(services, program, "m1") == (6000, 0)
    assert await stored_findings(services, program) == [
        (
            "p1",
            "single_accrual_cap",
            "REVIEW",
            "6000 points in one accrual (cap 5000)",
            True,
            AccrualStatus.POSTED.value,
        )
    ]


async def test_a_shadowed_block_beside_an_acting_review_only_holds(
    services: Services, program: ProgramFixture
) -> None:
    # given duplicate_receipt in shadow mode and a used receipt
    await services.fraud_settings.set_rule(program.id, "duplicate_receipt", shadow=True, actor="test")
    await enrol(services, program, "m1")
    await record_drafts(services, program, purchase("p1", "m1", at(9), 10, {"receiptId": "R"}))
    # when an accrual above the single cap reuses the receipt
    outcomes = await record_drafts(services, program, purchase("p2", "m1", at(10), 5001, {"receiptId": "R"}))
    # then only the acting rule decides and names itself in the message
    assert outcomes == [
        EventOutcome("p2", HELD, 0, "single_accrual_cap: 5001 points in one accrual (cap 5000)")
    ]
    assert await points(services, program, "m1") == (10, 5001)
    assert [(f[1], f[2], f[4]) for f in await stored_findings(services, program)] == [
        ("duplicate_receipt", "BLOCK", True),
        ("single_accrual_cap", "REVIEW", False),
    ]


async def test_a_disabled_rule_records_nothing(services: Services, program: ProgramFixture) -> None:
    # given the single-accrual cap disabled
    view = await services.fraud_settings.set_rule(
        program.id, "single_accrual_cap", enabled=False, actor="test"
    )
    assert (view.enabled, view.shadow) == (False, False)
    await enrol(services, program, "m1")
    # when an accrual passes the cap
    outcomes = await record_drafts(services, program, purchase("p1", "m1", at(10), 6000))
    # then it posts and nothing is found
    assert outcomes == [EventOutcome("p1", ACCEPTED, 6000, None)]
    assert await points(services, program, "m1") == (6000, 0)
    assert await stored_findings(services, program) == []


async def test_the_most_severe_verdict_wins_and_every_finding_is_kept(
    services: Services, program: ProgramFixture
) -> None:
    # given a used receipt
    await enrol(services, program, "m1")
    await record_drafts(services, program, purchase("p1", "m1", at(9), 10, {"receiptId": "R-9"}))
    # when an accrual above the single cap (REVIEW) reuses it (BLOCK)
    outcomes = await record_drafts(
        services, program, purchase("p2", "m1", at(10), 5001, {"receiptId": "R-9"})
    )
    # then it is blocked, the message names both rules, and both findings are stored
    assert outcomes == [
        EventOutcome(
            "p2",
            BLOCKED,
            0,
            "duplicate_receipt: receiptId R-9 was already used by event p1; "
            "single_accrual_cap: 5001 points in one accrual (cap 5000)",
        )
    ]
    assert await points(services, program, "m1") == (10, 0)
    assert await stored_findings(services, program) == [
        (
            "p2",
            "duplicate_receipt",
            "BLOCK",
            "receiptId R-9 was already used by event p1",
            False,
            AccrualStatus.REJECTED.value,
        ),
        (
            "p2",
            "single_accrual_cap",
            "REVIEW",
            "5001 points in one accrual (cap 5000)",
            False,
            AccrualStatus.REJECTED.value,
        ),
    ]


# -- edges: refunds, a history without spread, the referral's own device -------------------------


async def test_refunded_points_leave_the_daily_cap(services: Services, program: ProgramFixture) -> None:
    # given a daily cap of 100 and a purchase of 100 that was then refunded
    await configure(services, program, "daily_points_cap", maxPoints=100)
    await enrol(services, program, "m1")
    assert statuses(await record_drafts(services, program, purchase("p1", "m1", at(8), 100))) == [ACCEPTED]
    refund = EventDraft("r1", "m1", "refund", at(9), None, {"refundOf": "p1"})
    assert statuses(await record_drafts(services, program, refund)) == [ACCEPTED]
    assert await points(services, program, "m1") == (0, 0)
    # when the member earns 50 that day
    outcomes = await record_drafts(services, program, purchase("p2", "m1", at(10), 50))
    # then nothing posted or held that day reaches the cap: 50 posts
    assert outcomes == [EventOutcome("p2", ACCEPTED, 50)]


async def test_with_min_std_0_a_constant_history_flags_any_higher_amount(
    services: Services, program: ProgramFixture
) -> None:
    # given minStd 0 and ten purchases of exactly 10
    await configure(services, program, "amount_outlier", minStd=0)
    await enrol(services, program, "m1")
    history = [purchase(f"p{i}", "m1", at(8, i), 10) for i in range(10)]
    assert statuses(await record_drafts(services, program, *history)) == [ACCEPTED] * 10
    # when the member spends 1000
    outcomes = await record_drafts(services, program, purchase("big", "m1", at(12), 1000))
    # then the accrual is held by amount_outlier
    assert outcomes[0].status == HELD
    assert [f[1] for f in await stored_findings(services, program)] == ["amount_outlier"]


async def test_a_referral_sent_from_the_referees_device_is_blocked(
    services: Services, program: ProgramFixture
) -> None:
    # given a referee whose device is phone-9, and a referrer who never used it before
    await enrol(services, program, "a", MemberUpsert("b", attributes={"deviceId": "phone-9"}))
    # when the referrer sends the referral from phone-9
    referral_from_b_phone = EventDraft(
        "ref-1", "a", "referral", at(12), None, {"refereeExternalId": "b", "deviceId": "phone-9"}
    )
    outcomes = await record_drafts(services, program, referral_from_b_phone)
    # then it is blocked: referrer and referee share deviceId phone-9
    assert outcomes == [
        EventOutcome("ref-1", BLOCKED, 0, "self_referral: referrer and referee b share deviceId phone-9")
    ]
