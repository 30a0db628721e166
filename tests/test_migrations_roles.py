"""Migrations 0016 and 0017 on data: admins created before roles become OWNERs, and API keys keep
every power they had when program:write and segments:write were split (docs/security.md, Roles)."""

from __future__ import annotations

import orjson

import migrations
from tests.support.migrated import database_url, run_sql

__all__ = ["database_url"]  # the fixture: each test runs on SQLite and on PostgreSQL

SEED = [
    "INSERT INTO programs (id, key, name, kind, settings, created_at) "
    "VALUES (1, 'old', 'Old', 'B2C', '{}', '2026-01-01 00:00:00+00')",
    "INSERT INTO admin_users (id, program_id, email, password_hash, totp_secret, created_at) "
    "VALUES (1, 1, 'first@example.com', 'x', 'y', '2026-01-01 00:00:00+00')",
]
#: key name -> scopes before 0017, and after the newest revision
KEYS = {
    "ops": (
        ["program:write", "segments:write"],
        ["marketing:write", "program:write", "segments:write", "webhooks:manage"],
    ),
    "pos": (["events:write", "members:write"], ["events:write", "members:write"]),
    # 0021: a till's key (points:redeem) also gets coupons:redeem
    "till": (["points:redeem"], ["coupons:redeem", "points:redeem"]),
}


def _scopes(url: str) -> dict[str, list[str]]:
    rows = run_sql(url, [], "SELECT name, scopes FROM api_keys ORDER BY name")
    return {name: sorted(orjson.loads(s) if isinstance(s, (str, bytes)) else s) for name, s in rows}


def test_admins_become_owners_and_keys_keep_their_powers(database_url: str) -> None:
    # given a database at 0015, with an admin (no roles yet) and two API keys
    migrations.upgrade(database_url, "0015")
    keys = [
        f"INSERT INTO api_keys (id, program_id, name, prefix, key_hash, scopes, created_at) VALUES "
        f"({i}, 1, '{name}', 'lk_{i}', 'hash{i}', '{orjson.dumps(before).decode()}', '2026-01-01 00:00:00+00')"
        for i, (name, (before, _)) in enumerate(KEYS.items(), start=1)
    ]
    run_sql(database_url, SEED + keys)

    # when it is migrated to the newest revision
    migrations.upgrade(database_url)

    # then the admin is an OWNER and each key holds the scopes that now name its old powers
    assert run_sql(database_url, [], "SELECT email, role FROM admin_users") == [
        ("first@example.com", "OWNER")
    ]
    assert _scopes(database_url) == {name: after for name, (_, after) in KEYS.items()}

    # and a downgrade to 0016 takes the new scopes away again
    migrations.downgrade(database_url, "0016")
    assert _scopes(database_url) == {name: sorted(before) for name, (before, _) in KEYS.items()}
