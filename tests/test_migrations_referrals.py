"""Migration 0022 on data: members that existed before referrals get a referral code each (unique,
of the codes' alphabet), an erased member none; a downgrade takes the codes and tables away."""

from __future__ import annotations

import migrations
from domain.referrals.codes import ALPHABET, LENGTH
from tests.support.migrated import database_url, run_sql

__all__ = ["database_url"]  # the fixture: each test runs on SQLite and on PostgreSQL

PROGRAM = (
    "INSERT INTO programs (id, key, name, kind, settings, created_at) "
    "VALUES (1, 'old', 'Old', 'B2C', '{}', '2026-01-01 00:00:00+00')"
)


def _member(member_id: int, erased: bool = False) -> str:
    erased_at = "'2026-02-01 00:00:00+00'" if erased else "NULL"
    return (
        "INSERT INTO members (id, program_id, external_id, kind, attributes, channels, joined_at, created_at, "
        f"updated_at, points_balance, pending_points, erased_at) VALUES ({member_id}, 1, 'm{member_id}', "
        "'CUSTOMER', '{}', '[]', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00', "
        f"'2026-01-01 00:00:00+00', 0, 0, {erased_at})"
    )


def test_existing_members_get_a_code_and_erased_ones_none(database_url: str) -> None:
    # given a database at 0017 with 30 members, one of them erased
    migrations.upgrade(database_url, "0017")
    run_sql(database_url, [PROGRAM, *(_member(i, erased=i == 30) for i in range(1, 31))])

    # when it is migrated to 0022
    migrations.upgrade(database_url, "0022")

    # then every live member has its own code of the alphabet, and the erased one none
    rows = dict(run_sql(database_url, [], "SELECT id, referral_code FROM members ORDER BY id"))
    codes = [rows[i] for i in range(1, 30)]
    assert rows[30] is None
    assert len(set(codes)) == 29
    assert all(len(code) == LENGTH and set(code) <= set(ALPHABET) for code in codes)

    # and a downgrade to 0017 takes the column away again
    migrations.downgrade(database_url, "0017")
    assert run_sql(database_url, [], "SELECT count(*) FROM members") == [(30,)]
