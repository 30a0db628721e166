"""Reading and changing a program's fraud rule configuration (admins; GraphQL in api/fraud.py).

Who changed a rule last is read from the audit log (its latest setFraudRule entry): one record of who.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, announce
from domain.governance.audit_log import record_change
from domain.models import AuditEntry, FraudRuleSetting
from fraud.config import SPECS, RuleSettings, load_config, parse_params, spec_of


@dataclass(frozen=True)
class RuleView:
    name: str
    summary: str
    enabled: bool
    shadow: bool
    params: Mapping[str, float]
    defaults: Mapping[str, float]
    updated_by: str | None


def _view(settings: RuleSettings, updated_by: str | None) -> RuleView:
    spec = SPECS[settings.name]
    return RuleView(
        settings.name,
        spec.summary,
        settings.enabled,
        settings.shadow,
        dict(settings.params),
        dict(settings.defaults),
        updated_by,
    )


def audited_rule(settings: RuleSettings) -> dict[str, Any]:
    """A rule's configuration as the API shows it: what the audit log keeps before and after."""
    return {"enabled": settings.enabled, "shadow": settings.shadow, "params": dict(settings.params)}


async def _last_changed_by(session: AsyncSession, program_id: int) -> dict[str, str]:
    """Each changed rule's last changer: the actor of its newest setFraudRule audit entry."""
    newest = (
        select(func.max(AuditEntry.id))
        .where(AuditEntry.program_id == program_id, AuditEntry.action == SET_RULE)
        .group_by(AuditEntry.target)
    )
    rows = await session.execute(select(AuditEntry.target, AuditEntry.actor).where(AuditEntry.id.in_(newest)))
    return {str(target): actor for target, actor in rows}


SET_RULE = "setFraudRule"


class FraudSettingsService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def rules(self, program_id: int) -> list[RuleView]:
        async with self.db.read() as session:
            config = await load_config(session, program_id)
            changed_by = await _last_changed_by(session, program_id)
        return [_view(config[name], changed_by.get(name)) for name in SPECS]

    async def set_rule(
        self,
        program_id: int,
        name: str,
        *,
        enabled: bool | None = None,
        shadow: bool | None = None,
        params: object = None,
        actor: str,
    ) -> RuleView:
        """Change what is given; the rest keeps its current value. Takes effect with the next batch."""
        spec_of(name)
        async with self.db.unit_of_work() as uow:
            current = (await load_config(uow.session, program_id))[name]
            updated = RuleSettings(
                name,
                current.enabled if enabled is None else enabled,
                current.shadow if shadow is None else shadow,
                parse_params(name, params, current.params),
                current.defaults,
            )
            now = self.clock.now()
            table = FraudRuleSetting.__table__
            row = {
                "program_id": program_id,
                "rule": name,
                "enabled": updated.enabled,
                "shadow": updated.shadow,
                "params": dict(updated.params),
                "updated_at": now,
                "updated_by": actor[:200],  # a legacy column: the audit log says who (see above)
            }
            statement = insert_for(uow.session, table).values(row)
            await uow.session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.program_id, table.c.rule],
                    set_={
                        k: statement.excluded[k]
                        for k in ("enabled", "shadow", "params", "updated_at", "updated_by")
                    },
                )
            )
            if name == "non_compliant":
                announce(uow.session, "fraud-settings")  # the sweeper re-tags with the new threshold
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action=SET_RULE,
                at=now,
                target=name,
                before=audited_rule(current),
                after=audited_rule(updated),
            )
        return _view(updated, actor)
