"""segmentChanges subscriptions on real server processes (tests/support/servers.py runs them)."""

from __future__ import annotations

CHANGES = """
subscription($keys: [String!], $since: String) {
  segmentChanges(segmentKeys: $keys, since: $since) { cursor segmentKey memberExternalId change at }
}"""

#: Time for a subscribe message to reach the server's bus before the test causes changes.
SETTLE_S = 0.5


def bearer(token: str | None) -> dict[str, str]:
    """The connection_init payload of a caller with this token."""
    return {"authorization": f"Bearer {token}"}
