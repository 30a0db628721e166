"""Erasure and export through GraphQL, and the scans that look for what an erasure must leave nowhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, String, Text, cast, func, select
from sqlalchemy.types import TypeDecorator

from domain.models import Base
from tests.support.graphql import GraphQLClient

if TYPE_CHECKING:
    from api.runtime import Services

ERASE = "mutation($id: String!) { eraseMember(externalId: $id) }"
EXPORT = "query($id: String!) { exportMember(externalId: $id) }"


async def erase(admin: GraphQLClient, external_id: str) -> None:
    assert (await admin.data(ERASE, {"id": external_id}))["eraseMember"] is True


async def export(client: GraphQLClient, external_id: str) -> dict[str, Any]:
    document: dict[str, Any] = (await client.data(EXPORT, {"id": external_id}))["exportMember"]
    return document


def _textual(column: Any) -> bool:
    kind = column.type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl
    return isinstance(kind, String | Text | JSON)


async def rows_mentioning(services: Services, needle: str) -> dict[str, int]:
    """Per table.column, how many rows of the whole database hold `needle` in a text or JSON column."""
    found: dict[str, int] = {}
    async with services.db.read() as session:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not _textual(column):
                    continue
                count = (
                    await session.execute(
                        select(func.count())
                        .select_from(table)
                        .where(cast(column, Text).contains(needle, autoescape=True))
                    )
                ).scalar_one()
                if count:
                    found[f"{table.name}.{column.name}"] = count
    return found


async def redis_mentioning(services: Services, needle: str, member_id: int) -> list[str]:
    """The keys under the services' prefix whose name or any value holds `needle` or, as a sorted
    set's or set's member, `member_id`."""
    client = services.redis.client
    prefix = services.settings.redis_prefix
    hits: list[str] = []
    async for raw in client.scan_iter(match=f"{prefix}*"):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind = await client.type(raw)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "string":
            values: list[Any] = [await client.get(raw)]
        elif kind == "hash":
            values = [item for pair in (await client.hgetall(raw)).items() for item in pair]
        elif kind == "list":
            values = await client.lrange(raw, 0, -1)
        elif kind == "set":
            values = list(await client.smembers(raw))
        elif kind == "zset":
            values = list(await client.zrange(raw, 0, -1))
        elif kind == "stream":
            values = [str(entry) for entry in await client.xrange(raw) or []]
        else:
            values = []
        texts = [v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values]
        if needle in key or any(needle in t for t in texts) or (kind == "zset" and str(member_id) in texts):
            hits.append(key)
    return hits
