"""segmentChanges subscriptions on real server processes (tests/support/servers.py runs them)."""

from __future__ import annotations

from datetime import UTC, datetime

from domain.live.messages import LiveChange

AT = datetime(2025, 1, 1, tzinfo=UTC)

CHANGES = """
subscription($keys: [String!], $since: String) {
  segmentChanges(segmentKeys: $keys, since: $since) { cursor segmentKey memberExternalId change at }
}"""

#: Time for a subscribe message to reach the server's bus before the test causes changes.
SETTLE_S = 0.5


def bearer(token: str | None) -> dict[str, str]:
    """The connection_init payload of a caller with this token."""
    return {"authorization": f"Bearer {token}"}


def change(id_: int) -> LiveChange:
    """A relayed change of program 1 with log id `id_` (the bus tests' unit of work)."""
    return LiveChange(id_, 1, "vip", f"m{id_}", "ENTERED", AT)
