"""The organization hierarchy: parents, cycles refused, and the walks up and down it.

An organization may name a parent (`OrganizationInput.parentExternalId`): a
dealer group above its dealers, a dealer above its branches, a department
above its teams. `check_parents` is the pure rule of an upsert batch: a parent
must be stored or come earlier in the batch, and no organization may end up
above itself. `ancestors` and `subtree` walk a program's parent map, which is
small (organizations are few beside members) and read whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput
from domain.models import Organization


@dataclass(frozen=True)
class ParentChange:
    """Item `index` of a batch sets the parent of `external_id` to `parent` (None: to the top)."""

    index: int
    external_id: str
    parent: str | None


def check_parents(changes: Sequence[ParentChange], stored: Mapping[str, str | None]) -> dict[str, str | None]:
    """The parent map after `changes` (on top of `stored`: external id -> parent external id).

    InvalidInput naming the item (`organizations[i].parentExternalId`) when a parent is
    neither stored nor earlier in the batch, or when the change would close a cycle
    (the message spells it out: `B -> A -> B`). Items without a change are not listed.
    """
    parents = dict(stored)
    for change in changes:
        where = f"organizations[{change.index}].parentExternalId"
        parents.setdefault(change.external_id, None)  # it exists from its item on
        parent = change.parent
        if parent is None:
            parents[change.external_id] = None
            continue
        if parent not in parents:
            raise InvalidInput(
                f"{where}: {parent!r} is no organization of this program (nor one earlier in the list)",
                index=change.index,
            )
        chain = [change.external_id, parent]
        above: str | None = parent
        while above is not None:
            if above == change.external_id:
                raise InvalidInput(
                    f"{where}: {parent!r} would put {change.external_id!r} above itself: "
                    f"{' -> '.join(chain)}",
                    index=change.index,
                )
            above = parents.get(above)
            if above is not None:
                chain.append(above)
        parents[change.external_id] = parent
    return parents


async def parent_map(session: AsyncSession, program_id: int) -> dict[int, int | None]:
    """Every organization of the program: id -> parent id."""
    rows = await session.execute(
        select(Organization.id, Organization.parent_id).where(Organization.program_id == program_id)
    )
    return {org_id: parent_id for org_id, parent_id in rows}  # noqa: C416 - rows are Row objects


def ancestors(parents: Mapping[int, int | None], org_ids: Iterable[int]) -> set[int]:
    """The organizations and every one above them (a cycle cannot be stored; guarded anyway)."""
    found: set[int] = set()
    for org_id in org_ids:
        current: int | None = org_id
        while current is not None and current not in found:
            found.add(current)
            current = parents.get(current)
    return found


def subtrees(parents: Mapping[int, int | None], roots: Iterable[int]) -> dict[int, set[int]]:
    """Each root with every organization below it (the children map is built once)."""
    children = _children(parents)
    return {root: _below(children, [root]) for root in roots}


def subtree(parents: Mapping[int, int | None], org_ids: Iterable[int]) -> set[int]:
    """The organizations and every one below them."""
    return _below(_children(parents), org_ids)


def _children(parents: Mapping[int, int | None]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    return children


def _below(children: Mapping[int, list[int]], org_ids: Iterable[int]) -> set[int]:
    found: set[int] = set()
    pending = list(org_ids)
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.add(current)
        pending.extend(children.get(current, ()))
    return found
