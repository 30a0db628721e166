"""Reading the audit log through GraphQL (`auditLog`), for tests of the changes that write it."""

from __future__ import annotations

from typing import Any

from tests.support.graphql import GraphQLClient

AUDIT_LOG = """
query($first: Int, $after: String, $actor: String, $action: String) {
  auditLog(first: $first, after: $after, actor: $actor, action: $action) {
    edges { cursor node { at actor action target before after } }
    pageInfo { hasNextPage endCursor }
  }
}"""


async def audit_entries(reader: GraphQLClient, first: int = 500, **filters: Any) -> list[dict[str, Any]]:
    """The newest `first` entries (actor=, action= filter), newest first."""
    data = await reader.data(AUDIT_LOG, {"first": first, **filters})
    return [edge["node"] for edge in data["auditLog"]["edges"]]


async def newest_entry(reader: GraphQLClient) -> dict[str, Any]:
    entries = await audit_entries(reader, first=1)
    assert entries, "the audit log is empty"
    return entries[0]


def contains(actual: Any, expected: Any) -> bool:
    """`actual` has what `expected` lists: a dict's given keys (recursively), a list item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)
